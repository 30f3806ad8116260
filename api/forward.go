package api

// Requests for users another node owns (a cluster). Any node accepts any
// request: it verifies the token, computes the user's shard and serves it
// if it holds the shard; otherwise it forwards the request once to the
// owner's internal listener, marked with the hop header. The owner checks
// its lease again: if it lost it meanwhile it answers 421 (misdirected) —
// a request with the hop header is never forwarded again. The forwarder
// then re-reads the owners and retries once, and answers 503 with
// Retry-After if that fails too. A local request that finds its shard lost
// while it ran (ErrNotOwner: nothing was changed) is forwarded the same
// way.
//
// A retry never sends a change twice: it follows a 421 (the owner did
// nothing), a request that was never sent (peerconn.go), or a request that
// is safe to repeat (a read, a login, a change under an Idempotency-Key,
// which the owner applies once). A change without a key whose owner did
// not answer may have been applied: it is answered 503 "outcome unknown",
// as the node alone answers a change whose commit it could not confirm.

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"merch/actors"
)

// Router says which node serves a user: package cluster's view, through
// cmd. Safe for concurrent use; Owns is called on every request.
type Router interface {
	// Owns reports whether this node answers for name now.
	Owns(name string) bool
	// Owner returns the internal address of another node that owns name,
	// if one is known.
	Owner(name string) (addr string, ok bool)
	// Refresh re-reads the owners after they proved wrong (a misdirected
	// answer, no owner known); concurrent calls share one read that began
	// after each of them.
	Refresh()
}

// headerHop marks a forwarded request: its receiver never forwards it.
// headerClient carries the client's address to the owner (the brute-force
// and registration limits count by it). Both are trusted only on the
// internal listener: the public one drops them (public).
var (
	headerHop    = []byte("X-Merch-Hop")
	headerClient = []byte("X-Merch-Client")
)

// errMisdirected: a forwarded request reached a node that does not own its
// user (421); the forwarder retries once with fresh owners.
var errMisdirected = errors.New("this node does not serve that user; retry")

// errForwardUnknown: the owner took a change without an idempotency key
// and did not answer; it may have applied it.
var errForwardUnknown = errors.New("the owner did not answer; the change may have been applied (send it with an Idempotency-Key to retry safely)")

// errNoOwner: nobody is known to own the user's shard right now (a
// takeover in progress): 503 with Retry-After.
var errNoOwner = errors.New("the user's shard is moving between nodes; retry")

// forwardConnsPerPeer bounds connections to one peer, so a slow owner
// cannot take every descriptor of a forwarder (requests past it wait, then
// time out as 503).
const forwardConnsPerPeer = 512

// forwarder sends requests to other nodes' internal listeners. Safe for
// concurrent use.
type forwarder struct {
	timeout time.Duration
	mu      sync.Mutex
	clients map[string]*fasthttp.HostClient
}

func (f *forwarder) client(addr string) *fasthttp.HostClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.clients[addr]
	if c == nil {
		c = &fasthttp.HostClient{Addr: addr, MaxConns: forwardConnsPerPeer, ReadTimeout: f.timeout,
			WriteTimeout: f.timeout, MaxIdemponentCallAttempts: 1, NoDefaultUserAgentHeader: true,
			DisableHeaderNamesNormalizing: true,
			Dial:                          func(addr string) (net.Conn, error) { return dialPeer(addr, f.timeout) }}
		f.clients[addr] = c
	}
	return c
}

// elsewhere handles a request whose user this node does not serve: it
// forwards it (or refuses a forwarded one) and reports true; false when the
// node serves name (or runs alone).
func (s *Server) elsewhere(ctx *fasthttp.RequestCtx, name string) bool {
	if s.router == nil || s.router.Owns(name) {
		return false
	}
	s.forward(ctx, name)
	return true
}

// lostWhileServing forwards a request whose shard this node lost while it
// ran (err is ErrNotOwner: nothing was changed); false for other errors.
func (s *Server) lostWhileServing(ctx *fasthttp.RequestCtx, name string, err error) bool {
	if s.router == nil || !errors.Is(err, actors.ErrNotOwner) {
		return false
	}
	s.forward(ctx, name)
	return true
}

// Outcomes of one forwarding attempt (merch_cluster_forwards_total{result}).
type forwardResult int

const (
	fwdAnswered    forwardResult = iota // the owner answered (any status but 421)
	fwdMisdirected                      // 421: the owner lost the shard; retried
	fwdNotSent                          // never left this node; retried
	fwdFailed                           // sent, no answer: retried if repeatable, else unknown
	fwdNoOwner                          // no owner known after the tries: 503
	forwardResults
)

var forwardResultNames = [forwardResults]string{"answered", "misdirected", "not_sent", "failed", "no_owner"}

// Forwarding bounds: at most forwardSends requests sent per client request,
// and forwardTries looks at the owners (a stale view costs a look, not a
// send).
const (
	forwardSends = 2
	forwardTries = 3
)

// forward sends the request to name's owner and copies its answer; a
// forwarded request is refused instead (421).
func (s *Server) forward(ctx *fasthttp.RequestCtx, name string) {
	if len(ctx.Request.Header.PeekBytes(headerHop)) > 0 {
		writeError(ctx, errMisdirected)
		return
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	ctx.Request.CopyTo(req)
	req.Header.SetBytesKV(headerHop, []byte("1"))
	req.Header.SetBytesK(headerClient, clientIP(ctx).String())
	for tries, sends := 0, 0; tries < forwardTries && sends < forwardSends; tries++ {
		addr, ok := s.router.Owner(name)
		if !ok {
			s.router.Refresh()
			continue
		}
		sends++
		req.SetHost(addr)
		c := s.fwd.client(addr)
		err := c.DoTimeout(req, resp, s.fwd.timeout)
		switch {
		case err == nil && resp.StatusCode() != fasthttp.StatusMisdirectedRequest:
			s.forwards[fwdAnswered].Add(1)
			resp.CopyTo(&ctx.Response)
			echoRequestID(ctx) // whatever the owner answered, the client's id stays
			return
		case err == nil: // 421: the owner did nothing
			s.forwards[fwdMisdirected].Add(1)
		case errors.Is(err, errNotSent):
			s.forwards[fwdNotSent].Add(1)
			sends--                  // nothing reached the peer
			c.CloseIdleConnections() // the peer restarted: its other pooled connections are dead too
		case !repeatable(&ctx.Request):
			s.forwards[fwdFailed].Add(1)
			writeError(ctx, errForwardUnknown)
			return
		default:
			s.forwards[fwdFailed].Add(1)
		}
		s.router.Refresh()
	}
	s.forwards[fwdNoOwner].Add(1)
	writeError(ctx, errNoOwner)
}

// repeatable reports whether sending req twice has the effect of sending it
// once: reads, logins (a login creates its user at most once) and changes
// under an Idempotency-Key. GET /api/buy/{item} is a change.
func repeatable(req *fasthttp.Request) bool {
	if len(req.Header.Peek("Idempotency-Key")) > 0 {
		return true
	}
	p := req.URI().Path()
	return string(p) == "/api/info" || string(p) == "/api/auth"
}

// public is the public listener's handler: hop and client headers are ours
// to set, never a client's. Every request gets its X-Request-Id here
// (requestid.go), before routing, so every answer carries it.
func (s *Server) public(ctx *fasthttp.RequestCtx) {
	ctx.Request.Header.DelBytes(headerHop)
	ctx.Request.Header.DelBytes(headerClient)
	setRequestID(ctx)
	s.handler(ctx)
}

// clientIP is the client's address: the forwarder's word for a forwarded
// request (only the internal listener passes the header), else the peer.
func clientIP(ctx *fasthttp.RequestCtx) net.IP {
	if v := ctx.Request.Header.PeekBytes(headerClient); len(v) > 0 {
		if ip := net.ParseIP(string(v)); ip != nil {
			return ip
		}
	}
	return ctx.RemoteIP()
}
