//go:build !race

package api

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"merch/actors"
)

// richCoins lets a resident user buy and send for as long as a benchmark
// runs; the state keeps the money invariant (1000 + received = balance).
const richCoins = actors.Coins(1) << 40

// mustRichUser installs name in the store with richCoins received from a
// bank, logs it in and makes it resident, and returns a cached token.
func (e *testEnv) mustRichUser(tb testing.TB, name string) string {
	tb.Helper()
	e.store.Put(name, actors.UserState{PasswordHash: mustHash(tb, "pw"), Coins: actors.StartingCoins + richCoins,
		Received: []actors.Counterparty{{User: "bank", Amount: richCoins}}})
	tok, err := e.tokens.Issue(name)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := e.tokens.Verify([]byte(tok)); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.sys.Info(name); err != nil {
		tb.Fatal(err)
	}
	return tok
}

// Allocation budgets, measured with go1.26.8, hollywood v1.0.5 and fasthttp
// v1.78.0 (see the report in bench_test.go). Raising one needs a benchmark.
const (
	allocsInfo    = 2 // hollywood's Send of the request to the actor
	allocsBuy     = 4 // two actor messages and the journal record
	allocsSend    = 6 // three actor messages and the journal record
	allocsRouting = 0 // 404, and 401 without a token: no allocation at all
	allocs405     = 1 // fasthttp/router builds the Allow header
	allocsParam   = 3 // the {item} parameter route (unknown items only)
)

func TestHandlerAllocs(t *testing.T) {
	e := mustEnv(t, envConfig{syncJournal: true, noHTTPServer: true})
	tok := e.mustRichUser(t, "rich")
	e.mustRichUser(t, "payee")
	h := e.srv.Handler()
	tests := []struct {
		name       string
		ctx        *fasthttp.RequestCtx
		wantStatus int
		budget     float64
	}{
		{"GET /api/info cached token", mustCtx(t, "GET", "/api/info", tok, ""), 200, allocsInfo},
		{"GET /api/buy/pen sync journal", mustCtx(t, "GET", "/api/buy/pen", tok, ""), 200, allocsBuy},
		{"POST /api/sendCoin sync journal", mustCtx(t, "POST", "/api/sendCoin", tok, `{"toUser":"payee","amount":1}`), 200, allocsSend},
		{"404", mustCtx(t, "GET", "/api/nothing", tok, ""), 404, allocsRouting},
		{"405", mustCtx(t, "POST", "/api/info", tok, ""), 405, allocs405},
		{"401 no token", mustCtx(t, "GET", "/api/info", "", ""), 401, allocsRouting},
		{"401 no token on buy", mustCtx(t, "GET", "/api/buy/pen", "", ""), 401, allocsRouting},
		{"400 unknown item", mustCtx(t, "GET", "/api/buy/nothing", tok, ""), 400, allocsParam},
		{"400 bad amount", mustCtx(t, "POST", "/api/sendCoin", tok, `{"toUser":"payee","amount":0}`), 400, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := 0
			run := func() {
				tt.ctx.Response.Reset()
				h(tt.ctx)
				if tt.ctx.Response.StatusCode() != tt.wantStatus {
					bad++
				}
			}
			got := testing.AllocsPerRun(1000, run)
			if bad > 0 {
				t.Fatalf("%d runs answered %d %s, want %d", bad, tt.ctx.Response.StatusCode(),
					tt.ctx.Response.Body(), tt.wantStatus)
			}
			t.Logf("%.2f allocs/op (budget %v)", got, tt.budget)
			if got > tt.budget {
				t.Fatalf("%.2f allocs/op, budget %v", got, tt.budget)
			}
		})
	}
}

// replayConn serves one fixed request per ServeConn call and discards the
// response.
type replayConn struct {
	r       bytes.Reader
	request []byte
	out     int
}

func (c *replayConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *replayConn) Write(b []byte) (int, error)      { c.out += len(b); return len(b), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }

var _ io.Reader = (*replayConn)(nil)

// TestServeConnAllocs measures the whole server path (parse, route, handle,
// write) with the production server config.
func TestServeConnAllocs(t *testing.T) {
	e := mustEnv(t, envConfig{syncJournal: true, noHTTPServer: true})
	tok := e.mustRichUser(t, "rich")
	hs := e.srv.HTTPServer()
	hs.Logger = discardLogger{}
	tests := []struct {
		name    string
		request string
		status  string
		budget  float64
	}{
		{"info", "GET /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n\r\n", "200 OK", allocsInfo},
		{"info with X-Request-Id", "GET /api/info HTTP/1.1\r\nHost: x\r\nX-Request-Id: client-id-1\r\nAuthorization: Bearer " + tok + "\r\n\r\n", "200 OK", allocsInfo},
		{"buy with a bad X-Request-Id", "GET /api/buy/pen HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\"b\r\nAuthorization: Bearer " + tok + "\r\n\r\n", "200 OK", allocsBuy},
		{"buy", "GET /api/buy/pen HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n\r\n", "200 OK", allocsBuy},
		{"404", "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", "404 Not Found", allocsRouting},
		{"401", "GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n", "401 Unauthorized", allocsRouting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &replayConn{request: []byte(tt.request)}
			var out bytes.Buffer
			serve := func() {
				c.r.Reset(c.request)
				if err := hs.ServeConn(c); err != nil {
					t.Fatal(err)
				}
			}
			// Capture one response to check it.
			c.r.Reset(c.request)
			cw := &captureConn{replayConn: c, w: &out}
			if err := hs.ServeConn(cw); err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(out.Bytes(), []byte("HTTP/1.1 "+tt.status+"\r\n")) {
				t.Fatalf("response %q, want %s", out.String(), tt.status)
			}
			if !bytes.Contains(out.Bytes(), []byte("\r\nX-Request-Id: ")) {
				t.Fatalf("response %q has no X-Request-Id", out.String())
			}
			got := testing.AllocsPerRun(1000, serve)
			t.Logf("%.2f allocs/op through ServeConn (handler budget %v)", got, tt.budget)
			if got > tt.budget {
				t.Fatalf("%.2f allocs/op, budget %v", got, tt.budget)
			}
		})
	}
}

type captureConn struct {
	*replayConn
	w io.Writer
}

func (c *captureConn) Write(b []byte) (int, error) { return c.w.Write(b) }
