package api

import (
	"errors"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	"github.com/maypok86/otter/v2"
	"github.com/maypok86/otter/v2/stats"

	"merch/actors"
)

// Tokens issues and verifies HS256 JWTs with "sub" (the username) and "exp".
// A verified token is cached by its text until it expires, because a parse
// costs ~40 allocations and a few microseconds. Safe for concurrent use.
type Tokens struct {
	secret []byte
	ttl    time.Duration
	parser *jwt.Parser
	cache  *otter.Cache[string, verified]
	stats  *stats.Counter // the cache's hits and misses (striped: no contention)
	now    func() time.Time
}

type verified struct {
	user string
	exp  int64 // unix seconds
}

// NewTokens returns Tokens signing with secret; tokens live for ttl; at most
// cacheMax verified tokens are remembered.
func NewTokens(secret []byte, ttl time.Duration, cacheMax int) (*Tokens, error) {
	if len(secret) < 16 {
		return nil, errors.New("api: JWT secret must be at least 16 bytes")
	}
	if ttl <= 0 || cacheMax < 1 {
		return nil, errors.New("api: token TTL and cache size must be positive")
	}
	t := &Tokens{secret: secret, ttl: ttl, now: time.Now, stats: stats.NewCounter()}
	// The parse and the cache check must agree on the clock.
	t.parser = jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(func() time.Time { return t.now() }))
	cache, err := otter.New(&otter.Options[string, verified]{
		MaximumSize:   cacheMax,
		StatsRecorder: t.stats,
		ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[string, verified]) time.Duration {
			return time.Until(time.Unix(e.Value.exp, 0))
		}),
	})
	if err != nil {
		return nil, err
	}
	t.cache = cache
	return t, nil
}

// CacheStats returns the cache's lookups so far that found a verified
// token (hits) and that did not (misses, then parsed).
func (t *Tokens) CacheStats() (hits, misses uint64) {
	st := t.stats.Snapshot()
	return st.Hits, st.Misses
}

// Issue returns a signed token for user.
func (t *Tokens) Issue(user string) (string, error) {
	now := t.now()
	claims := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(t.ttl)),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.secret)
}

// Verify returns the token's user, or errBadToken.
func (t *Tokens) Verify(token []byte) (string, error) {
	if len(token) == 0 {
		return "", errNoToken
	}
	// The lookup key aliases the request buffer without copying: otter only
	// hashes and compares a key on lookup, it does not keep it.
	if v, ok := t.cache.GetIfPresent(unsafe.String(&token[0], len(token))); ok {
		if v.exp > t.now().Unix() {
			return v.user, nil
		}
		return "", errBadToken
	}
	return t.parse(string(token))
}

func (t *Tokens) parse(token string) (string, error) {
	var claims jwt.RegisteredClaims
	_, err := t.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return t.secret, nil })
	if err != nil || claims.ExpiresAt == nil || !actors.ValidUsername([]byte(claims.Subject)) {
		return "", errBadToken
	}
	v := verified{user: claims.Subject, exp: claims.ExpiresAt.Unix()}
	t.cache.Set(token, v)
	return v.user, nil
}
