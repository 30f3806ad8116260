package api

// X-Request-Id: every answer carries one. A client's own id is kept when
// it is sane (requestIDLenMax bytes at most of token characters, see
// saneRequestID); otherwise, or when absent, the server makes one: a
// per-process random prefix and a counter, formatted in a stack buffer, so
// the hot path allocates nothing for it. The id is written into the request
// too, so the forwarder passes it to the owner node (which keeps it: it is
// sane) and the log lines a request causes can name it.

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// requestIDLenMax bounds a client's id: longer ones are replaced, so a log
// line or a header cannot be inflated through it.
const requestIDLenMax = 128

var headerRequestID = []byte("X-Request-Id")

// requestIDPrefix tells processes apart (a restart, another node); the
// counter tells requests of one process apart.
var (
	requestIDPrefix = newRequestIDPrefix()
	requestIDSeq    atomic.Uint64
)

// requestIDPrefixLen: 8 random bytes, hex, and a dash.
const requestIDPrefixLen = 17

func newRequestIDPrefix() [requestIDPrefixLen]byte {
	var raw [8]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand panics instead)
	var p [requestIDPrefixLen]byte
	hex.Encode(p[:16], raw[:])
	p[16] = '-'
	return p
}

// setRequestID makes sure ctx's request carries a sane X-Request-Id (the
// client's, or a new one) and echoes it on the response.
func setRequestID(ctx *fasthttp.RequestCtx) {
	id := ctx.Request.Header.PeekBytes(headerRequestID)
	if !saneRequestID(id) {
		var buf [requestIDPrefixLen + 20]byte // 20: the digits of a uint64
		n := copy(buf[:], requestIDPrefix[:])
		ctx.Request.Header.SetBytesKV(headerRequestID, strconv.AppendUint(buf[:n], requestIDSeq.Add(1), 10))
		id = ctx.Request.Header.PeekBytes(headerRequestID)
	}
	ctx.Response.Header.SetBytesKV(headerRequestID, id)
}

// echoRequestID puts the request's id on the response again, after
// something replaced the response's headers (a forwarded answer).
func echoRequestID(ctx *fasthttp.RequestCtx) {
	if id := ctx.Request.Header.PeekBytes(headerRequestID); len(id) > 0 {
		ctx.Response.Header.SetBytesKV(headerRequestID, id)
	}
}

// requestIDBytes returns the request's id for the actors, which copy it
// (valid only while the handler runs).
func requestIDBytes(ctx *fasthttp.RequestCtx) []byte {
	return ctx.Request.Header.PeekBytes(headerRequestID)
}

// requestID returns the request's id for a log line (cold paths only: it
// copies).
func requestID(ctx *fasthttp.RequestCtx) string {
	return string(ctx.Request.Header.PeekBytes(headerRequestID))
}

// saneRequestID: 1–requestIDLenMax bytes of RFC 9110 token characters
// (letters, digits, !#$%&'*+-.^_`|~) or of '/', '=', ':', '@' (base64 and
// URN-like ids): nothing that needs quoting in a log line or a header.
func saneRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > requestIDLenMax {
		return false
	}
	for _, c := range id {
		if !requestIDChar[c] {
			return false
		}
	}
	return true
}

var requestIDChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~/=:@" {
		t[c] = true
	}
	return t
}()
