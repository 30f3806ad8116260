package api

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// authRequest builds a raw POST /api/auth with extra header bytes padded so
// that the request line plus headers (through the blank line) is exactly
// headerLen bytes, and body as is.
func authRequest(tb testing.TB, headerLen int, body string) string {
	tb.Helper()
	head := "POST /api/auth HTTP/1.1\r\nHost: merch.test\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + fmt.Sprint(len(body)) + "\r\n"
	const padName = "X-Pad: "
	pad := headerLen - len(head) - len(padName) - len("\r\n") - len("\r\n")
	if pad < 0 {
		tb.Fatalf("header length %d too small", headerLen)
	}
	return head + padName + strings.Repeat("p", pad) + "\r\n\r\n" + body
}

// paddedAuth is a valid auth body of exactly n bytes (JSON whitespace).
func paddedAuth(tb testing.TB, name string, n int) string {
	tb.Helper()
	b := authBody(name, "pw")
	if n < len(b) {
		tb.Fatalf("body length %d too small", n)
	}
	return b[:len(b)-1] + strings.Repeat(" ", n-len(b)) + "}"
}

// TestServerLimits pins the documented limits: a body of BodyMax (4 KiB)
// bytes is accepted and one more byte is 413; a request line plus headers of
// HeaderMax (8 KiB) bytes is accepted and one more byte is 431. Both answers
// come from the ErrorHandler in the API's error shape.
func TestServerLimits(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	if BodyMax != 4096 || HeaderMax != 8192 {
		t.Fatalf("limits changed: BodyMax %d HeaderMax %d; update API docs and this test", BodyMax, HeaderMax)
	}
	chunked := func(body string) string {
		return "POST /api/auth HTTP/1.1\r\nHost: merch.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	}
	tests := []struct {
		name    string
		request string
		status  int
		errSub  string
	}{
		{"body at BodyMax", authRequest(t, 200, paddedAuth(t, "body-max", BodyMax)), 200, ""},
		{"body over BodyMax", authRequest(t, 200, paddedAuth(t, "body-over", BodyMax+1)), 413, "too large"},
		{"body far over BodyMax", authRequest(t, 200, paddedAuth(t, "body-far", 1<<20)), 413, "too large"},
		{"chunked body at BodyMax", chunked(paddedAuth(t, "chunk-max", BodyMax)), 200, ""},
		{"chunked body over BodyMax", chunked(paddedAuth(t, "chunk-over", BodyMax+1)), 413, "too large"},
		{"headers at HeaderMax", authRequest(t, HeaderMax, authBody("head-max", "pw")), 200, ""},
		{"headers over HeaderMax", authRequest(t, HeaderMax+1, authBody("head-over", "pw")), 431, "headers too large"},
		{"headers far over HeaderMax", authRequest(t, 4*HeaderMax, authBody("head-far", "pw")), 431, "headers too large"},
		{"unparsable request line", "BROKEN\r\n\r\n", 400, "bad request"},
		{"bad Content-Length", "POST /api/auth HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400, "bad request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.raw(t, tt.request)
			checkReply(t, r, tt.status, tt.errSub)
		})
	}
}

// TestErrorLogHidesCredentials: fasthttp logs requests it cannot parse; the
// log must not carry the request's headers (bearer tokens) or body
// (passwords).
func TestErrorLogHidesCredentials(t *testing.T) {
	t.Parallel()
	log := &bufferLogger{}
	e := mustEnv(t, envConfig{logger: log})
	tok := e.mustAuth(t, "logged", "pw")
	tests := []struct{ name, request string }{
		{"bad header", "GET /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nX-Bad: a\x01b\r\n\r\n"},
		{"headers too large", "GET /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nX-Pad: " +
			strings.Repeat("p", HeaderMax) + "\r\n\r\n"},
		{"body too large", authRequest(t, 300, paddedAuth(t, "logged", BodyMax+1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.raw(t, tt.request)
			if r.status < 400 {
				t.Fatalf("status %d", r.status)
			}
			mustErrorBody(t, r)
		})
	}
	got := log.String()
	for _, secret := range []string{tok, "Bearer", `"pw"`} {
		if strings.Contains(got, secret) {
			t.Errorf("server error log contains %q:\n%.400s", secret, got)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

// TestRequestError maps each error fasthttp hands the ErrorHandler.
func TestRequestError(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
	}{
		{"body too large", fasthttp.ErrBodyTooLarge, 413},
		{"wrapped body too large", fmt.Errorf("reading: %w", fasthttp.ErrBodyTooLarge), 413},
		{"small buffer", &fasthttp.ErrSmallBuffer{}, 431},
		{"read timeout", &net.OpError{Op: "read", Err: timeoutErr{}}, 408},
		{"fasthttp timeout", fasthttp.ErrTimeout, 408},
		{"anything else", errors.New("cannot parse"), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			requestError(&ctx, tt.err)
			r := reply{status: ctx.Response.StatusCode(), body: string(ctx.Response.Body()),
				contentType: string(ctx.Response.Header.ContentType())}
			checkReply(t, r, tt.status, "")
		})
	}
}
