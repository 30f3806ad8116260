package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func mustTokens(tb testing.TB, ttl time.Duration) *Tokens {
	tb.Helper()
	tk, err := NewTokens(testSecret, ttl, 100)
	if err != nil {
		tb.Fatal(err)
	}
	return tk
}

func mustSign(tb testing.TB, m jwt.SigningMethod, claims jwt.Claims, key any) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// hs256 signs header.payload (raw JSON) with key, without any library
// checks, for headers and claims a library would refuse to produce.
func hs256(header, payload string, key []byte) string {
	enc := base64.RawURLEncoding
	unsigned := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(unsigned))
	return unsigned + "." + enc.EncodeToString(m.Sum(nil))
}

func TestNewTokensConfig(t *testing.T) {
	tests := []struct {
		name   string
		secret []byte
		ttl    time.Duration
		max    int
		ok     bool
	}{
		{"valid", testSecret, time.Hour, 1, true},
		{"short secret", []byte("0123456789abcde"), time.Hour, 1, false},
		{"zero ttl", testSecret, 0, 1, false},
		{"zero cache", testSecret, time.Hour, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTokens(tt.secret, tt.ttl, tt.max)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestTokensRoundTrip(t *testing.T) {
	tk := mustTokens(t, time.Hour)
	for _, user := range []string{"a", "alice", "A.b_c-9", strings.Repeat("z", 64)} {
		tok, err := tk.Issue(user)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 { // parsed, then cached
			got, err := tk.Verify([]byte(tok))
			if err != nil || got != user {
				t.Fatalf("verify %d of %q: %q, %v", i, user, got, err)
			}
		}
		claims := jwt.RegisteredClaims{}
		if _, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return testSecret, nil },
			jwt.WithValidMethods([]string{"HS256"})); err != nil {
			t.Fatal(err)
		}
		if claims.Subject != user || claims.ExpiresAt == nil || claims.IssuedAt == nil ||
			claims.ExpiresAt.Sub(claims.IssuedAt.Time) != time.Hour {
			t.Fatalf("claims %+v", claims)
		}
	}
}

// TestTokenRejections: every forged, expired or malformed token is a 401
// through the real handler.
func TestTokenRejections(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	e.mustAuth(t, "holder", "pw")
	now := time.Now()
	valid := func(mut func(c *jwt.RegisteredClaims)) jwt.RegisteredClaims {
		c := jwt.RegisteredClaims{Subject: "holder", IssuedAt: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
		if mut != nil {
			mut(&c)
		}
		return c
	}
	good := mustSign(t, jwt.SigningMethodHS256, valid(nil), testSecret)
	parts := strings.Split(good, ".")
	enc := base64.RawURLEncoding
	exp := now.Add(time.Hour).Unix()
	pastTokens := mustTokens(t, time.Hour)
	pastTokens.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, err := pastTokens.Issue("holder")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		token string
	}{
		{"alg none", mustSign(t, jwt.SigningMethodNone, valid(nil), jwt.UnsafeAllowNoneSignatureType)},
		{"alg none hand-made", strings.Join([]string{enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)), parts[1], ""}, ".")},
		{"HS384 same secret", mustSign(t, jwt.SigningMethodHS384, valid(nil), testSecret)},
		{"HS512 same secret", mustSign(t, jwt.SigningMethodHS512, valid(nil), testSecret)},
		{"RS256 header HMAC-signed", hs256(`{"alg":"RS256","typ":"JWT"}`, `{"sub":"holder","exp":`+itoa(exp)+`}`, testSecret)},
		{"tampered sub", parts[0] + "." + enc.EncodeToString([]byte(`{"sub":"other","exp":`+itoa(exp)+`}`)) + "." + parts[2]},
		{"tampered signature", parts[0] + "." + parts[1] + "." + flipLast(parts[2])},
		{"signature dropped", parts[0] + "." + parts[1] + "."},
		{"other secret", mustSign(t, jwt.SigningMethodHS256, valid(nil), []byte("another-secret-0123456789"))},
		{"expired", expired},
		{"expired a second ago", mustSign(t, jwt.SigningMethodHS256, valid(func(c *jwt.RegisteredClaims) {
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Second))
		}), testSecret)},
		{"not yet valid", mustSign(t, jwt.SigningMethodHS256, valid(func(c *jwt.RegisteredClaims) {
			c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour))
		}), testSecret)},
		{"issued in the future", mustSign(t, jwt.SigningMethodHS256, valid(func(c *jwt.RegisteredClaims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour))
		}), testSecret)},
		{"missing exp", mustSign(t, jwt.SigningMethodHS256, valid(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil }), testSecret)},
		{"exp not a number", hs256(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"holder","exp":"soon"}`, testSecret)},
		{"missing sub", mustSign(t, jwt.SigningMethodHS256, valid(func(c *jwt.RegisteredClaims) { c.Subject = "" }), testSecret)},
		{"sub not a username", mustSign(t, jwt.SigningMethodHS256, valid(func(c *jwt.RegisteredClaims) { c.Subject = "hol der" }), testSecret)},
		{"sub too long", mustSign(t, jwt.SigningMethodHS256, valid(func(c *jwt.RegisteredClaims) { c.Subject = strings.Repeat("h", 65) }), testSecret)},
		{"sub a number", hs256(`{"alg":"HS256","typ":"JWT"}`, `{"sub":7,"exp":`+itoa(exp)+`}`, testSecret)},
		{"valid token of an unknown user", mustSign(t, jwt.SigningMethodHS256, valid(func(c *jwt.RegisteredClaims) { c.Subject = "ghost" }), testSecret)},
		{"two parts", parts[0] + "." + parts[1]},
		{"four parts", good + ".x"},
		{"payload not JSON", parts[0] + "." + enc.EncodeToString([]byte("holder")) + "." + parts[2]},
	}
	// The controls: the same request with a good token succeeds.
	for _, tok := range []string{good, " " + good + " "} {
		if r := e.do(t, req{method: "GET", path: "/api/info", headers: []string{"Authorization", "Bearer " + tok}}); r.status != 200 {
			t.Fatalf("control token: %d %s", r.status, r.body)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/api/info", "/api/buy/pen"} {
				r := e.do(t, req{method: "GET", path: path, token: tt.token})
				checkReply(t, r, 401, "")
			}
			r := e.do(t, req{method: "POST", path: "/api/sendCoin", token: tt.token, body: `{"toUser":"holder","amount":1}`})
			checkReply(t, r, 401, "")
		})
	}
	if st, _ := e.store.State("holder"); st.Coins != 1000 {
		t.Fatalf("holder has %d coins after rejected tokens", st.Coins)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func flipLast(s string) string {
	b := []byte(s)
	if b[len(b)-2] == 'A' {
		b[len(b)-2] = 'B'
	} else {
		b[len(b)-2] = 'A'
	}
	return string(b)
}

// TestTokenCache proves a verified token is served from the cache: once
// cached, it keeps verifying after the signing secret changes (no parse), and
// an uncached token signed with the old secret does not.
func TestTokenCache(t *testing.T) {
	tk := mustTokens(t, time.Hour)
	cached, err := tk.Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	uncached, err := tk.Issue("bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tk.cache.GetIfPresent(cached); ok {
		t.Fatal("cached before any Verify")
	}
	if u, err := tk.Verify([]byte(cached)); err != nil || u != "alice" {
		t.Fatalf("first verify: %q %v", u, err)
	}
	if v, ok := tk.cache.GetIfPresent(cached); !ok || v.user != "alice" {
		t.Fatalf("not cached after Verify: %+v %v", v, ok)
	}
	tk.secret = []byte("rotated-secret-0123456789") // a parse would now fail
	tests := []struct {
		name    string
		token   string
		want    string
		wantErr error
	}{
		{"cached token, no parse", cached, "alice", nil},
		{"uncached token is parsed and refused", uncached, "", errBadToken},
		{"empty", "", "", errNoToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := tk.Verify([]byte(tt.token))
			if u != tt.want || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify: %q, %v; want %q, %v", u, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestTokenExpiry: a token stops working at its exp, whether it is cached or
// not, with the clock injected through Tokens.now.
func TestTokenExpiry(t *testing.T) {
	tests := []struct {
		name     string
		advance  time.Duration
		cacheIt  bool
		wantUser string
	}{
		{"cached, before exp", 59 * time.Minute, true, "alice"},
		{"cached, after exp", 61 * time.Minute, true, ""},
		{"uncached, before exp", 59 * time.Minute, false, "alice"},
		{"uncached, after exp", 61 * time.Minute, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := mustTokens(t, time.Hour)
			start := time.Now()
			tk.now = func() time.Time { return start }
			tok, err := tk.Issue("alice")
			if err != nil {
				t.Fatal(err)
			}
			if tt.cacheIt {
				if _, err := tk.Verify([]byte(tok)); err != nil {
					t.Fatal(err)
				}
			}
			tk.now = func() time.Time { return start.Add(tt.advance) }
			u, err := tk.Verify([]byte(tok))
			if u != tt.wantUser || (tt.wantUser == "") != errors.Is(err, errBadToken) {
				t.Fatalf("Verify: %q, %v; want %q", u, err, tt.wantUser)
			}
		})
	}
}

// TestTokenCacheEvictsAtExp: the cache entry itself goes when the token
// expires (wall clock), so the cache does not fill with dead tokens.
func TestTokenCacheEvictsAtExp(t *testing.T) {
	t.Parallel()
	tk := mustTokens(t, 2*time.Second) // exp is whole seconds: 1–2 s from now
	tok, err := tk.Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Verify([]byte(tok)); err != nil {
		t.Fatal(err)
	}
	if _, ok := tk.cache.GetIfPresent(tok); !ok {
		t.Fatal("not cached")
	}
	waitFor(t, "cache entry to expire", func() bool {
		_, ok := tk.cache.GetIfPresent(tok)
		return !ok
	})
	if _, err := tk.Verify([]byte(tok)); !errors.Is(err, errBadToken) {
		t.Fatalf("expired token after eviction: %v", err)
	}
}

// TestTokensConcurrent is the -race test of the token cache.
func TestTokensConcurrent(t *testing.T) {
	t.Parallel()
	tk := mustTokens(t, time.Hour)
	users := []string{"u0", "u1", "u2", "u3"}
	toks := make([]string, len(users))
	for i, u := range users {
		var err error
		if toks[i], err = tk.Issue(u); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := (g + i) % len(users)
				if u, err := tk.Verify([]byte(toks[k])); err != nil || u != users[k] {
					errs <- errors.New("verify " + toks[k] + " gave " + u)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
