package listener

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// failBound bounds how long a broken implementation can make a test hang.
const failBound = 5 * time.Second

func emfile() error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

// fakeListener returns the errors in errs one per Accept (forever, if
// repeat), then the conns sent on conns, until it is closed.
type fakeListener struct {
	mu     sync.Mutex
	errs   []error
	repeat bool
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
}

func newFakeListener(repeat bool, errs ...error) *fakeListener {
	return &fakeListener{errs: errs, repeat: repeat, conns: make(chan net.Conn, 1), done: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if len(f.errs) > 0 {
		err := f.errs[0]
		if !f.repeat {
			f.errs = f.errs[1:]
		}
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.done:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	}
}

func (f *fakeListener) Close() error {
	f.once.Do(func() { close(f.done) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	fl := newFakeListener(false, emfile(), emfile(), emfile())
	server, client := net.Pipe()
	defer client.Close()
	fl.conns <- server

	var mu sync.Mutex
	var backoffs []time.Duration
	l := New(fl, Config{OnAcceptError: func(err error, d time.Duration) {
		if !errors.Is(err, syscall.EMFILE) {
			t.Errorf("OnAcceptError got %v, want EMFILE", err)
		}
		mu.Lock()
		backoffs = append(backoffs, d)
		mu.Unlock()
	}})
	defer l.Close()

	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if c.(*conn).Conn != server {
		t.Fatalf("Accept returned %v, want the fake listener's conn", c)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(backoffs) != 3 {
		t.Fatalf("OnAcceptError called %d times, want 3", len(backoffs))
	}
	if backoffs[0] != minBackoff || backoffs[1] <= backoffs[0] || backoffs[2] <= backoffs[1] {
		t.Fatalf("backoffs %v, want growing from %v", backoffs, minBackoff)
	}
}

func TestCloseDuringBackoff(t *testing.T) {
	fl := newFakeListener(true, emfile())
	atMax := make(chan struct{})
	var once sync.Once
	l := New(fl, Config{OnAcceptError: func(_ error, d time.Duration) {
		if d == maxBackoff {
			once.Do(func() { close(atMax) })
		}
	}})

	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	select {
	case <-atMax:
	case <-time.After(failBound):
		t.Fatal("backoff never reached its maximum")
	}
	// Accept now sleeps maxBackoff; Close must cut that short.
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close returned %v, want net.ErrClosed", err)
		}
		// fasthttp recognises a closed listener by this text, not errors.Is.
		if !strings.Contains(err.Error(), "use of closed network connection") {
			t.Fatalf("Accept error %q lacks the text fasthttp matches", err)
		}
	case <-time.After(failBound):
		t.Fatal("Accept did not return after Close")
	}
	if waited := time.Since(start); waited >= maxBackoff/2 {
		t.Fatalf("Accept returned %v after Close, want well under %v", waited, maxBackoff)
	}
}

// serve wraps a TCP listener on 127.0.0.1 and runs it.
func serve(t *testing.T, cfg Config) (*Listener, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, cfg)
	return l, run(t, l)
}

// run accepts from l and returns admitted conns on a channel until the
// listener is closed at the end of the test.
func run(t *testing.T, l *Listener) <-chan net.Conn {
	t.Helper()
	conns := make(chan net.Conn, 16)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			c, err := l.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept: %v", err)
				}
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-stopped
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return conns
}

func dial(t *testing.T, l *Listener, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: failBound}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		if from != "" && errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Skipf("cannot bind %s: %v", from, err)
		}
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(failBound))
	t.Cleanup(func() { c.Close() })
	return c
}

func admitted(t *testing.T, conns <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-conns:
		return c
	case <-time.After(failBound):
		t.Fatal("connection was not admitted")
		return nil
	}
}

// expectRejected reads a complete response from c and checks it is the
// rejection with the given status and body.
func expectRejected(t *testing.T, c net.Conn, status int, body string) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading rejection: %v", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading rejection body: %v", err)
	}
	if resp.StatusCode != status || string(got) != body {
		t.Fatalf("rejection %d %q, want %d %q", resp.StatusCode, got, status, body)
	}
	if h := resp.Header; h.Get("Retry-After") != "1" || h.Get("Content-Type") != "application/json" || !resp.Close {
		t.Fatalf("rejection headers %v", h)
	}
}

// reasons records OnReject calls.
type reasons struct {
	mu  sync.Mutex
	got []string
}

func (r *reasons) add(reason string) {
	r.mu.Lock()
	r.got = append(r.got, reason)
	r.mu.Unlock()
}

func (r *reasons) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, ",")
}

func TestMaxConns(t *testing.T) {
	var rs reasons
	l, conns := serve(t, Config{MaxConns: 2, OnReject: rs.add})
	dial(t, l, "")
	first := admitted(t, conns)
	dial(t, l, "")
	admitted(t, conns)

	expectRejected(t, dial(t, l, ""), 503, `{"errors":"too many connections"}`)
	if l.Rejected() != 1 || rs.String() != ReasonMaxConns {
		t.Fatalf("Rejected() = %d, reasons %q", l.Rejected(), rs.String())
	}

	first.Close()
	if n := l.Open(); n != 1 {
		t.Fatalf("Open() = %d after a close, want 1", n)
	}
	dial(t, l, "")
	admitted(t, conns)
	if n := l.Open(); n != 2 {
		t.Fatalf("Open() = %d, want 2", n)
	}
}

func TestMaxConnsPerIP(t *testing.T) {
	var rs reasons
	l, conns := serve(t, Config{MaxConnsPerIP: 1, OnReject: rs.add})
	dial(t, l, "127.0.0.2")
	admitted(t, conns)

	expectRejected(t, dial(t, l, "127.0.0.2"), 429, `{"errors":"too many connections from this address"}`)
	if rs.String() != ReasonMaxConnsPerIP {
		t.Fatalf("reasons %q, want %q", rs.String(), ReasonMaxConnsPerIP)
	}

	dial(t, l, "127.0.0.3")
	admitted(t, conns)
	if n := l.Open(); n != 2 {
		t.Fatalf("Open() = %d, want 2", n)
	}
}

// eventListener reports what happens to the conns it accepts.
type eventListener struct {
	net.Listener
	events chan string
}

func (e eventListener) Accept() (net.Conn, error) {
	c, err := e.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &eventConn{TCPConn: c.(*net.TCPConn), events: e.events}, nil
}

type eventConn struct {
	*net.TCPConn
	events chan string
}

func (c *eventConn) Read(p []byte) (int, error) {
	c.report("read")
	return c.TCPConn.Read(p)
}

func (c *eventConn) Close() error {
	c.report("close")
	return c.TCPConn.Close()
}

func (c *eventConn) report(event string) {
	select {
	case c.events <- event:
	default:
	}
}

func TestRejectedClientThatSentRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan string, 16)
	l := New(eventListener{Listener: ln, events: events}, Config{MaxConns: 1})
	defer l.Close()

	dial(t, l, "")
	held, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close() // Unread and open until the end, so it sends no events.

	// The request is in the server's socket before it is even accepted.
	c := dial(t, l, "")
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	go l.Accept()

	// Closing with the request unread makes the kernel send RST, which on a
	// real network can discard the answer before the client reads it. Over
	// loopback the answer survives anyway, so the client's read alone cannot
	// catch a missing drain: the rejecter must also read before it closes.
	select {
	case ev := <-events:
		if ev != "read" {
			t.Fatalf("rejected conn was %sd before its request was drained", ev)
		}
	case <-time.After(failBound):
		t.Fatal("rejected conn was neither read nor closed")
	}
	expectRejected(t, c, 503, `{"errors":"too many connections"}`)
}

func TestDoubleCloseReleasesOnce(t *testing.T) {
	l, conns := serve(t, Config{MaxConns: 10, MaxConnsPerIP: 10})
	dial(t, l, "")
	a := admitted(t, conns)
	dial(t, l, "")
	b := admitted(t, conns)
	if n := l.Open(); n != 2 {
		t.Fatalf("Open() = %d, want 2", n)
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { a.Close() })
	}
	wg.Wait()
	a.Close()
	if n := l.Open(); n != 1 {
		t.Fatalf("Open() = %d after closing one conn repeatedly, want 1", n)
	}
	l.mu.Lock()
	perIP := len(l.perIP)
	l.mu.Unlock()
	if perIP != 1 {
		t.Fatalf("per-IP table has %d entries, want 1", perIP)
	}

	b.Close()
	b.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open != 0 || len(l.perIP) != 0 {
		t.Fatalf("after all closes open = %d, per-IP table %v; want 0 and empty", l.open, l.perIP)
	}
}

// waitFor polls cond until it holds or failBound passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(failBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRejectersAreBounded(t *testing.T) {
	const clients = 100
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, Config{MaxConns: 1})
	// Rejected clients never close, so every rejecter stays busy for the
	// whole test however slow it runs, and the cap decides who is answered.
	l.rejectTimeout = time.Minute
	conns := run(t, l)
	dial(t, l, "")
	held := admitted(t, conns)

	cs := make([]net.Conn, clients)
	for i := range cs {
		cs[i] = dial(t, l, "")
	}
	waitFor(t, "100 rejections", func() bool { return l.Rejected() == clients })

	answered := 0
	for _, c := range cs {
		got, err := io.ReadAll(c)
		if len(got) > 0 {
			if string(got) != string(busyResponse) {
				t.Fatalf("rejected client read %q (%v)", got, err)
			}
			answered++
		}
	}
	if answered != maxRejecters {
		t.Fatalf("%d of %d rejected clients were answered, want %d", answered, clients, maxRejecters)
	}

	// The accept loop is still alive: a freed slot admits the next client.
	held.Close()
	dial(t, l, "")
	admitted(t, conns)
}

func TestFastHTTPServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int32
	flaky := &flakyListener{Listener: ln, fails: 3}
	l := New(flaky, Config{MaxConns: 1, OnAcceptError: func(error, time.Duration) { failed.Add(1) }})
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") },
		Logger:  quietLogger{},
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	// Serve survived three EMFILEs and answers over keep-alive.
	first := dial(t, l, "")
	br := bufio.NewReader(first)
	get(t, first, br)
	if n := failed.Load(); n != 3 {
		t.Fatalf("OnAcceptError called %d times, want 3", n)
	}

	// A second client while the first is open is turned away in JSON.
	expectRejected(t, dial(t, l, ""), 503, `{"errors":"too many connections"}`)
	get(t, first, br)

	first.Close()
	waitFor(t, "the server to close its side", func() bool { return l.Open() == 0 })
	if err := srv.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve returned %v after Shutdown, want nil", err)
		}
	case <-time.After(failBound):
		t.Fatal("Serve did not return after Shutdown")
	}
}

// get sends a request on c and checks the handler's answer.
func get(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("response %d %q (%v), want 200 ok", resp.StatusCode, body, err)
	}
}

// flakyListener fails its first fails accepts with EMFILE.
type flakyListener struct {
	net.Listener
	fails int32
	n     atomic.Int32
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.n.Add(1) <= f.fails {
		return nil, emfile()
	}
	return f.Listener.Accept()
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}
