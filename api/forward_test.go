package api

import (
	"bufio"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

// elsewhereRouter owns nobody: every request goes to the peer at addr.
type elsewhereRouter struct{ addr string }

func (r elsewhereRouter) Owns(string) bool            { return false }
func (r elsewhereRouter) Owner(string) (string, bool) { return r.addr, true }
func (r elsewhereRouter) Refresh()                    {}

// peer is a fake owner's internal listener on loopback TCP. It reads each
// request whole and counts it (by path), then answers 200 with no body, as
// an owner answers a change (and without X-Request-Id: the forwarder puts
// the client's back) — or, when
// vanish is set, closes the connection without answering (an owner killed
// after it applied the change). With closeIdle it closes each connection
// after its answer, as a restarting owner does to the forwarder's pool.
type peer struct {
	ln        net.Listener
	vanish    bool
	closeIdle bool
	mu        sync.Mutex
	got       map[string]int
	ids       []string      // X-Request-Id of each request received
	closed    chan struct{} // with closeIdle: a connection was closed
	conns     []net.Conn    // accepted
	wg        sync.WaitGroup
}

func startPeer(t *testing.T, vanish, closeIdle bool) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{ln: ln, vanish: vanish, closeIdle: closeIdle, got: map[string]int{}, closed: make(chan struct{}, 1024)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *peer) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *peer) serve(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = br.Discard(int(r.ContentLength))
		p.mu.Lock()
		p.got[r.URL.Path]++
		p.ids = append(p.ids, r.Header.Get("X-Request-Id"))
		p.mu.Unlock()
		if p.vanish {
			return
		}
		if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")); err != nil {
			return
		}
		if p.closeIdle {
			_ = c.Close()
			p.closed <- struct{}{}
			return
		}
	}
}

func (p *peer) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *peer) requestIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ids)
}

func (p *peer) count(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[path]
}

// forwardingEnv is a server whose router places every user on p, and a
// token for alice.
func forwardingEnv(t *testing.T, p *peer) (*testEnv, string) {
	t.Helper()
	e := mustEnv(t, envConfig{router: elsewhereRouter{p.ln.Addr().String()}})
	token, err := e.tokens.Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	return e, token
}

// transfers sends n one-coin transfers through e one after another, calling
// between after each; every one must succeed and p must receive exactly n.
func transfers(t *testing.T, p *peer, e *testEnv, token string, n int, between func()) {
	t.Helper()
	for i := range n {
		r := e.do(t, req{method: "POST", path: "/api/sendCoin", token: token, body: `{"toUser":"bob","amount":1}`})
		if r.status != 200 {
			t.Fatalf("transfer %d: %d %s", i, r.status, strings.TrimSpace(r.body))
		}
		between()
	}
	if got := p.count("/api/sendCoin"); got != n {
		t.Errorf("the owner received %d transfers, want %d", got, n)
	}
}

// TestForwardNeverSendsAChangeTwice: the owner takes each request and dies
// before answering. A change without an Idempotency-Key may have been
// applied: it is sent once and answered 503 "may have been applied"; reads
// and keyed changes are safe to repeat and are retried once.
func TestForwardNeverSendsAChangeTwice(t *testing.T) {
	t.Parallel()
	p := startPeer(t, true, false)
	e, token := forwardingEnv(t, p)
	send := `{"toUser":"bob","amount":5}`
	tests := []struct {
		name  string
		r     req
		sent  int
		reply string
	}{
		{"transfer without a key", req{method: "POST", path: "/api/sendCoin", token: token, body: send}, 1, "may have been applied"},
		{"purchase without a key", req{method: "GET", path: "/api/buy/cup", token: token}, 1, "may have been applied"},
		{"transfer with a key", req{method: "POST", path: "/api/sendCoin", token: token, body: send,
			headers: []string{"Idempotency-Key", "k1"}}, 2, "moving between nodes"},
		{"purchase with a key", req{method: "GET", path: "/api/buy/pen", token: token,
			headers: []string{"Idempotency-Key", "k2"}}, 2, "moving between nodes"},
		{"info", req{method: "GET", path: "/api/info", token: token}, 2, "moving between nodes"},
	}
	for _, tc := range tests {
		before := p.count(tc.r.path)
		checkReply(t, e.do(t, tc.r), 503, tc.reply)
		if got := p.count(tc.r.path) - before; got != tc.sent {
			t.Errorf("%s: the owner received it %d times, want %d", tc.name, got, tc.sent)
		}
	}
}

// TestForwardSkipsClosedPooledConnections: the owner closes each
// connection after answering (it restarted). The forwarder's next request
// must not be written into the dead connection — for a change without a
// key that would be an unknown outcome — but sent on a new one.
func TestForwardSkipsClosedPooledConnections(t *testing.T) {
	t.Parallel()
	p := startPeer(t, false, true)
	e, token := forwardingEnv(t, p)
	transfers(t, p, e, token, 20, func() {
		<-p.closed // the pooled connection is dead before the next request
	})
}

// TestForwardReusesConnections: requests forwarded one after another to a
// live owner share one connection (the check before reuse finds it open).
func TestForwardReusesConnections(t *testing.T) {
	t.Parallel()
	p := startPeer(t, false, false)
	e, token := forwardingEnv(t, p)
	const n = 20
	transfers(t, p, e, token, n, func() {})
	if c := p.connections(); c != 1 {
		t.Errorf("%d sequential forwards used %d connections, want 1", n, c)
	}
}
