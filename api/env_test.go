package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"golang.org/x/crypto/bcrypt"

	"merch/actors"
	"merch/actors/actorstest"
)

// failTimeout only bounds a failure; nothing waits for it on success.
const failTimeout = 10 * time.Second

// journalQueueMax is the test journal's queue, like persist's bounded ring.
const journalQueueMax = 1024

// testSecret signs every token in these tests.
var testSecret = []byte("test-secret-0123456789abcdef")

// envConfig tunes a test environment; zero values take the defaults below.
type envConfig struct {
	failuresMax   int
	nameFailures  int // per name, all addresses; 0: 10 × failuresMax
	window        time.Duration
	registerRate  float64 // registrations per second per address; 0: off
	registerBurst int
	hashWorkers   int
	hashQueue     int
	observe       func(time.Duration) // called after the counting observer
	syncJournal   bool                // the journal commits inside Append (allocation budgets, benchmarks)
	tokenTTL      time.Duration
	noHTTPServer  bool
	logger        fasthttp.Logger      // the HTTP server's error log; nil: discarded
	registry      *prometheus.Registry // nil: a fresh empty one
	actorMetrics  actors.Metrics       // nil: actors.NopMetrics
	router        Router               // nil: a node alone
}

// testEnv is a real System (hollywood engine, user actors) behind the real
// router, served by the real fasthttp server config over an in-memory
// listener.
type testEnv struct {
	srv      *Server
	sys      *actors.System
	store    *actorstest.Store
	journal  *actorstest.Journal
	tokens   *Tokens
	hasher   *Hasher
	limiter  *Limiter
	registry *prometheus.Registry
	hashes   atomic.Int64 // bcrypt runs observed
	readyErr atomic.Pointer[error]
	admin    http.Handler // AdminHandler over registry and ready
	ln       *fasthttputil.InmemoryListener
	client   *fasthttp.HostClient
	fromMu   sync.Mutex
	from     map[string]*fasthttp.HostClient // clients by local address
}

func mustEnv(tb testing.TB, cfg envConfig) *testEnv {
	tb.Helper()
	if cfg.failuresMax == 0 {
		cfg.failuresMax = 5
	}
	if cfg.window == 0 {
		cfg.window = time.Hour
	}
	if cfg.hashWorkers == 0 {
		cfg.hashWorkers = 2
	}
	if cfg.hashQueue == 0 {
		cfg.hashQueue = 64
	}
	if cfg.tokenTTL == 0 {
		cfg.tokenTTL = time.Hour
	}
	if cfg.registry == nil {
		cfg.registry = prometheus.NewRegistry()
	}
	if cfg.actorMetrics == nil {
		cfg.actorMetrics = actors.NopMetrics{}
	}
	e := &testEnv{store: actorstest.MustStore(tb), registry: cfg.registry}
	if cfg.syncJournal {
		e.journal = actorstest.NewSyncJournal(e.store)
	} else {
		e.journal = actorstest.MustJournal(tb, e.store, journalQueueMax)
	}
	engine, err := actor.NewEngine(actor.NewEngineConfig())
	if err != nil {
		tb.Fatal(err)
	}
	e.sys, err = actors.NewSystem(actors.Config{
		Engine: engine, Journal: e.journal, Store: e.store, Metrics: cfg.actorMetrics,
		InboxSize: 8, InflightPerUserMax: 64,
		IdleTTL: time.Hour, SweepInterval: time.Hour,
		LoadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.sys.Close)
	observe := cfg.observe
	e.hasher, err = NewHasher(bcrypt.MinCost, cfg.hashWorkers, cfg.hashQueue, func(d time.Duration) {
		e.hashes.Add(1)
		if observe != nil {
			observe(d)
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.hasher.Close)
	if e.tokens, err = NewTokens(testSecret, cfg.tokenTTL, 1000); err != nil {
		tb.Fatal(err)
	}
	if cfg.nameFailures == 0 {
		cfg.nameFailures = 10 * cfg.failuresMax
	}
	if e.limiter, err = NewLimiter(LimiterConfig{FailuresMax: cfg.failuresMax, NameFailuresMax: cfg.nameFailures,
		Window: cfg.window, NamesMax: 1000}); err != nil {
		tb.Fatal(err)
	}
	if cfg.registerBurst == 0 {
		cfg.registerBurst = 1
	}
	regs, err := NewRegistrations(cfg.registerRate, cfg.registerBurst, 1000)
	if err != nil {
		tb.Fatal(err)
	}
	e.srv, err = New(Config{System: e.sys, Tokens: e.tokens, Hasher: e.hasher, Limiter: e.limiter,
		Registrations: regs, Registry: e.registry, Router: cfg.router, ForwardTimeout: failTimeout})
	if err != nil {
		tb.Fatal(err)
	}
	e.admin = AdminHandler(e.registry, e.ready, nil)
	if cfg.noHTTPServer {
		return e
	}
	e.ln = fasthttputil.NewInmemoryListener()
	hs := e.srv.HTTPServer()
	hs.Logger = cfg.logger // changes no limit; keeps the test output readable
	if hs.Logger == nil {
		hs.Logger = discardLogger{}
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(e.ln) }()
	e.client = &fasthttp.HostClient{Addr: "merch.test", Dial: func(string) (net.Conn, error) { return e.ln.Dial() },
		MaxConns: 64, MaxIdemponentCallAttempts: 1}
	tb.Cleanup(func() {
		e.client.CloseIdleConnections()
		_ = hs.Shutdown()
		_ = e.ln.Close()
		<-served
	})
	return e
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// bufferLogger keeps what the HTTP server logs. Safe for concurrent use.
type bufferLogger struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *bufferLogger) Printf(format string, args ...any) {
	l.mu.Lock()
	fmt.Fprintf(&l.buf, format+"\n", args...)
	l.mu.Unlock()
}

func (l *bufferLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (e *testEnv) ready(context.Context) error {
	if p := e.readyErr.Load(); p != nil {
		return *p
	}
	return nil
}

// reply is a response, copied out of fasthttp's pooled objects.
type reply struct {
	status       int
	body         string
	contentType  string // "" when absent
	retryAfter   string
	requestID    string
	cacheControl string
}

// req describes one request; headers are name, value pairs. from, when
// set, is the client's address.
type req struct {
	method, path, token, body string
	headers                   []string
	from                      string
}

// adminGet serves GET path from the admin handler.
func (e *testEnv) adminGet(tb testing.TB, path string) reply {
	tb.Helper()
	w := httptest.NewRecorder()
	e.admin.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return reply{status: w.Code, body: w.Body.String(), contentType: w.Header().Get("Content-Type"),
		retryAfter: w.Header().Get("Retry-After")}
}

// do sends r through the in-memory listener and the real server.
func (e *testEnv) do(tb testing.TB, r req) reply {
	tb.Helper()
	q, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(q)
	defer fasthttp.ReleaseResponse(resp)
	q.Header.SetMethod(r.method)
	q.SetRequestURI("http://merch.test" + r.path)
	if r.token != "" {
		q.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+r.token)
	}
	for i := 0; i+1 < len(r.headers); i += 2 {
		q.Header.Set(r.headers[i], r.headers[i+1])
	}
	if r.body != "" {
		q.Header.SetContentType("application/json")
		q.SetBodyString(r.body)
	}
	client := e.client
	if r.from != "" {
		client = e.clientFrom(r.from)
	}
	if err := client.DoTimeout(q, resp, failTimeout); err != nil {
		tb.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	checkSpec(tb, r.method, r.path, resp) // spec_test.go
	return reply{status: resp.StatusCode(), body: string(resp.Body()), contentType: string(resp.Header.ContentType()),
		retryAfter: string(resp.Header.Peek("Retry-After")), requestID: string(resp.Header.Peek("X-Request-Id")),
		cacheControl: string(resp.Header.Peek("Cache-Control"))}
}

// clientFrom returns a client whose connections come from addr (an IP).
func (e *testEnv) clientFrom(addr string) *fasthttp.HostClient {
	e.fromMu.Lock()
	defer e.fromMu.Unlock()
	if c := e.from[addr]; c != nil {
		return c
	}
	local := &net.TCPAddr{IP: net.ParseIP(addr), Port: 40000}
	c := &fasthttp.HostClient{Addr: "merch.test", MaxConns: 8, MaxIdemponentCallAttempts: 1,
		Dial: func(string) (net.Conn, error) { return e.ln.DialWithLocalAddr(local) }}
	if e.from == nil {
		e.from = map[string]*fasthttp.HostClient{}
	}
	e.from[addr] = c
	return c
}

// raw writes request bytes as they are on a new connection and reads one
// response: for requests a well-behaved client would not send.
func (e *testEnv) raw(tb testing.TB, request string) reply {
	tb.Helper()
	c, err := e.ln.Dial()
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(failTimeout)); err != nil {
		tb.Fatal(err)
	}
	writeErr := make(chan error, 1)
	go func() { // the server may answer before it has read everything
		_, err := c.Write([]byte(request))
		writeErr <- err
	}()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		tb.Fatalf("reading response to %.60q: %v", request, err)
	}
	method, path := requestLine(request)
	checkSpec(tb, method, path, resp) // spec_test.go
	_ = c.Close()
	<-writeErr
	return reply{status: resp.StatusCode(), body: string(resp.Body()), contentType: string(resp.Header.ContentType()),
		requestID: string(resp.Header.Peek("X-Request-Id"))}
}

// mustAuth logs name in (registering it if new) and returns the token.
func (e *testEnv) mustAuth(tb testing.TB, name, password string) string {
	tb.Helper()
	r := e.do(tb, req{method: "POST", path: "/api/auth", body: authBody(name, password)})
	if r.status != 200 {
		tb.Fatalf("auth %q: %d %s", name, r.status, r.body)
	}
	var out struct{ Token string }
	if err := json.Unmarshal([]byte(r.body), &out); err != nil || out.Token == "" {
		tb.Fatalf("auth %q: body %s: %v", name, r.body, err)
	}
	return out.Token
}

// mustInfo reads the info of token's user, decoded strictly.
func (e *testEnv) mustInfo(tb testing.TB, token string) (actorstest.Info, string) {
	tb.Helper()
	r := e.do(tb, req{method: "GET", path: "/api/info", token: token})
	if r.status != 200 {
		tb.Fatalf("info: %d %s", r.status, r.body)
	}
	ib, err := actorstest.DecodeInfo([]byte(r.body))
	if err != nil {
		tb.Fatalf("info body %s: %v", r.body, err)
	}
	return ib, r.body
}

func authBody(name, password string) string {
	b, err := json.Marshal(map[string]string{"username": name, "password": password})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// mustErrorBody checks the API's error shape: JSON {"errors": non-empty
// string} with Content-Type application/json.
func mustErrorBody(tb testing.TB, r reply) string {
	tb.Helper()
	if r.contentType != "application/json" {
		tb.Errorf("status %d: Content-Type %q, want application/json", r.status, r.contentType)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		tb.Fatalf("status %d: error body %q is not JSON: %v", r.status, r.body, err)
	}
	msg, ok := m["errors"].(string)
	if !ok || msg == "" || len(m) != 1 {
		tb.Fatalf("status %d: error body %q is not {\"errors\": non-empty string}", r.status, r.body)
	}
	return msg
}

// waitFor polls cond until it holds; the deadline only bounds a failure.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(failTimeout)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		<-t.C
	}
}

// mustHash returns a bcrypt hash at the test cost.
func mustHash(tb testing.TB, password string) []byte {
	tb.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// mustCtx prepares a request for calling the handler directly.
func mustCtx(tb testing.TB, method, path, token, body string) *fasthttp.RequestCtx {
	tb.Helper()
	ctx := &fasthttp.RequestCtx{}
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	if token != "" {
		ctx.Request.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+token)
	}
	if body != "" {
		ctx.Request.SetBodyString(body)
	}
	return ctx
}
