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
	// Owner returns the internal address of name's owner, if one is known.
	Owner(name string) (addr string, ok bool)
	// Refresh re-reads the owners (after a misdirected answer).
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
			DisableHeaderNamesNormalizing: true}
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
	for attempt := 0; attempt < 2; attempt++ {
		addr, ok := s.router.Owner(name)
		if !ok {
			s.router.Refresh()
			continue
		}
		req.SetHost(addr)
		err := s.fwd.client(addr).DoTimeout(req, resp, s.fwd.timeout)
		if err == nil && resp.StatusCode() != fasthttp.StatusMisdirectedRequest {
			s.forwarded.Add(1)
			resp.CopyTo(&ctx.Response)
			return
		}
		s.router.Refresh()
	}
	writeError(ctx, errNoOwner)
}

// public is the public listener's handler: hop and client headers are ours
// to set, never a client's.
func (s *Server) public(ctx *fasthttp.RequestCtx) {
	ctx.Request.Header.DelBytes(headerHop)
	ctx.Request.Header.DelBytes(headerClient)
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
