package api

import (
	"bytes"
	"errors"
	"net"

	"github.com/valyala/fasthttp"

	"merch/actors"
)

var bearer = []byte("Bearer ")

// user authenticates the request's bearer token.
func (s *Server) user(ctx *fasthttp.RequestCtx) (string, error) {
	h := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	if len(h) <= len(bearer) || !bytes.EqualFold(h[:len(bearer)], bearer) {
		return "", errNoToken
	}
	return s.tokens.Verify(bytes.TrimSpace(h[len(bearer):]))
}

// writeOK marks a 200 with a JSON body (info, auth). The 200 of a change
// (buy, sendCoin) has no body and so no Content-Type: the status says it.
func writeOK(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
}

// info answers GET /api/info from the actor's cached body.
func (s *Server) info(ctx *fasthttp.RequestCtx) {
	name, err := s.user(ctx)
	if err != nil {
		writeError(ctx, err)
		return
	}
	if s.elsewhere(ctx, name) {
		return
	}
	body, err := s.sys.InfoTraced(name, requestIDBytes(ctx))
	if err != nil {
		if !s.lostWhileServing(ctx, name, err) {
			writeError(ctx, err)
		}
		return
	}
	writeOK(ctx)
	ctx.Response.SetBodyRaw(body) // immutable, shared with the actor's cache
}

// buyHandler answers GET /api/buy/{item} for one item (0: unknown item).
func (s *Server) buyHandler(item actors.ItemID) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		name, err := s.user(ctx)
		if err != nil {
			writeError(ctx, err)
			return
		}
		if item == 0 {
			writeError(ctx, actors.ErrUnknownItem)
			return
		}
		key, err := idempotencyKey(ctx)
		if err != nil {
			writeError(ctx, err)
			return
		}
		if s.elsewhere(ctx, name) {
			return
		}
		if err := s.sys.BuyTraced(name, item, key, requestIDBytes(ctx)); err != nil {
			if !s.lostWhileServing(ctx, name, err) {
				writeError(ctx, err)
			}
			return
		}
		// 200, no body.
	}
}

// sendCoin answers POST /api/sendCoin.
func (s *Server) sendCoin(ctx *fasthttp.RequestCtx) {
	name, err := s.user(ctx)
	if err != nil {
		writeError(ctx, err)
		return
	}
	key, err := idempotencyKey(ctx)
	if err != nil {
		writeError(ctx, err)
		return
	}
	if s.elsewhere(ctx, name) {
		return
	}
	p := parsers.Get()
	to, amount, err := decodeSend(p, ctx.PostBody())
	if err == nil {
		err = s.sys.SendBytesTraced(name, to, amount, key, requestIDBytes(ctx))
	}
	parsers.Put(p)
	if err != nil {
		if !s.lostWhileServing(ctx, name, err) {
			writeError(ctx, err)
		}
		return
	}
	// 200, no body.
}

// idempotencyKey returns the optional Idempotency-Key header, copied.
func idempotencyKey(ctx *fasthttp.RequestCtx) (string, error) {
	k := ctx.Request.Header.Peek("Idempotency-Key")
	if k == nil {
		return "", nil
	}
	if len(k) == 0 || len(k) > actors.IdempotencyKeyLenMax {
		return "", errBadKey
	}
	for _, c := range k {
		if c < 0x21 || c > 0x7e {
			return "", errBadKey
		}
	}
	return string(k), nil
}

// auth answers POST /api/auth: log in, or register a new name. No answer
// of it may be stored by a cache: a 200 carries a bearer token (RFC 6749
// §5.1).
func (s *Server) auth(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetBytesKV(headerCacheControl, noStore)
	p := parsers.Get()
	defer parsers.Put(p)
	name, password, err := decodeAuth(p, ctx.PostBody())
	if err != nil {
		writeError(ctx, err)
		return
	}
	user := string(name)
	if s.elsewhere(ctx, user) { // the name's owner registers or verifies it
		return
	}
	if err := s.authenticate(user, password, clientIP(ctx)); err != nil {
		if s.lostWhileServing(ctx, user, err) {
			return
		}
		writeError(ctx, err)
		if errors.Is(err, errTooManyTries) {
			ctx.Response.Header.SetBytesKV(headerRetryAfter, s.loginRetryAfter)
		}
		return
	}
	token, err := s.tokens.Issue(user)
	if err != nil {
		writeError(ctx, err)
		return
	}
	writeOK(ctx)
	body := ctx.Response.BodyWriter()
	_, _ = body.Write(tokenOpen)
	_, _ = body.Write([]byte(token)) // JWTs are base64url and dots: no escaping
	_, _ = body.Write(tokenClose)
}

var tokenOpen, tokenClose = []byte(`{"token":"`), []byte(`"}`)

var headerCacheControl, noStore = []byte("Cache-Control"), []byte("no-store")

// authenticate checks the password of an existing user or creates a new
// one. Repeated logins compare a keyed digest instead of running bcrypt.
// addr is the client's address, for the brute-force and registration
// limits.
func (s *Server) authenticate(user string, password []byte, addr net.IP) error {
	// A user who is not resident needs bcrypt whatever happens (register, or
	// verify after loading): when hashing is saturated, refuse before paying
	// for a database lookup.
	if s.hasher.Busy() && !s.sys.Resident(user) {
		return errHashQueueFull
	}
	counted := false // one registration attempt takes one token
	for range authAttempts {
		acct, err := s.sys.Lookup(user)
		switch {
		case err == nil:
			return s.login(acct, user, password, addr)
		case !errors.Is(err, actors.ErrUnknownUser):
			return err
		}
		if !counted {
			if err := s.registrations.Allow(addr); err != nil {
				return err
			}
			counted = true
		}
		hash, err := s.hasher.Hash(password)
		if err != nil {
			return err
		}
		err = s.sys.Register(user, hash)
		if err == nil { // created and durable; the next login skips bcrypt
			if acct, err := s.sys.Lookup(user); err == nil {
				acct.SetDigest(s.hasher.Digest([]byte(user), password))
			}
			return nil
		}
		if !errors.Is(err, actors.ErrUserExists) {
			return err
		}
		// Someone else created the name meanwhile: verify against theirs.
	}
	return actors.ErrUnavailable
}

// authAttempts bounds the register-or-login loop: each round either logs
// in, registers, or finds the name taken meanwhile (then logs in next).
const authAttempts = 3

func (s *Server) login(acct actors.Account, user string, password []byte, addr net.IP) error {
	if err := s.limiter.Check(user, addr); err != nil {
		return err
	}
	digest := s.hasher.Digest([]byte(user), password)
	if known := acct.Digest(); known != nil {
		if SameDigest(known, digest) {
			return nil
		}
		// The password cannot change, so a different digest is wrong.
		return s.limiter.Fail(user, addr)
	}
	ok, err := s.hasher.Compare(acct.PasswordHash(), password)
	if err != nil {
		return err
	}
	if !ok {
		return s.limiter.Fail(user, addr)
	}
	acct.SetDigest(digest)
	return nil
}
