package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"merch/actors"
	"merch/api"
	"merch/cluster"
	"merch/metrics"
	"merch/persist"
)

// Cluster tuning that is not configuration.
const (
	creditWait     = 250 * time.Millisecond // a transfer's bounded wait for the receiver's fold
	foldPoll       = 500 * time.Millisecond // how often pending credits of held shards are folded
	foldTimeout    = 2 * time.Second
	nudgeConnsMax  = 64
	singleWriterID = "main" // the writer row and lease holder of a node alone
)

// ownerRef lets the journal (opened first: its claim is the incarnation)
// reach the lease manager made after it.
type ownerRef struct{ m *cluster.Manager }

func (o *ownerRef) Refresh(ctx context.Context) (int64, error) { return o.m.Refresh(ctx) }
func (o *ownerRef) Holds(s actors.Shard, e uint64) bool        { return o.m.Holds(s, e) }

var _ persist.Ownership = (*ownerRef)(nil)

// router adapts the lease manager to api.Router.
type router struct{ m *cluster.Manager }

func (r router) Owns(name string) bool {
	_, ok := r.m.Lease(actors.ShardOf(name))
	return ok
}

// Owner names another node: a view that says this node owns a shard it
// does not answer for (lost, or handing off) is stale, not a destination.
func (r router) Owner(name string) (string, bool) {
	node, addr, ok := r.m.Owner(actors.ShardOf(name))
	return addr, ok && node != r.m.Node()
}

func (r router) Refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r.m.RefreshView(ctx)
}

// nudger asks a shard's owner to fold its pending credits (actors.Credits).
type nudger struct {
	m      *cluster.Manager
	fold   func(ctx context.Context, s actors.Shard) error
	client *fasthttp.Client
}

func (n *nudger) Nudge(ctx context.Context, s actors.Shard) error {
	node, addr, ok := n.m.Owner(s)
	if !ok {
		return errors.New("no owner known")
	}
	if node == n.m.Node() {
		return n.fold(ctx, s)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(creditWait)
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/internal/fold?shard=" + strconv.Itoa(int(s)))
	req.Header.SetMethod(fasthttp.MethodPost)
	if err := n.client.DoDeadline(req, resp, deadline); err != nil {
		return err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("fold on %s: %d", node, resp.StatusCode())
	}
	return nil
}

// ownersMap renders the edge's routing map: "shard node" per line.
func ownersMap(m *cluster.Manager) []byte {
	var b bytes.Buffer
	owners := m.Owners()
	for _, o := range owners {
		if o.Live && o.Node != "" {
			fmt.Fprintf(&b, "%d %s\n", o.Shard, o.Node)
		}
	}
	return b.Bytes()
}

// clusterNode is what a node of a cluster runs beside the single-node
// service: the lease manager, the fold poller, the internal listener.
type clusterNode struct {
	mgr      *cluster.Manager
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	internal *fasthttp.Server
	ln       net.Listener
	addr     string // advertised INTERNAL_ADDR
	// pending credits of held shards at the last poll (metrics)
	pendingCount, pendingAge atomic.Int64
}

// registerClusterMetrics exports merch_cluster_*.
func (m *Main) registerClusterMetrics(reg prometheus.Registerer) {
	n := m.node
	metrics.RegisterCluster(reg, metrics.ClusterSources{
		Owned: n.mgr.Owned, Renewals: n.mgr.Renewals, RenewFailures: n.mgr.RenewFailures,
		Handoffs: n.mgr.Handoffs, Forwards: m.api.Forwards, CreditWaitsMissed: m.sys.CreditWaitsMissed,
		Pending: func() (int64, time.Duration) {
			return n.pendingCount.Load(), time.Duration(n.pendingAge.Load())
		},
	})
}

// startLeases makes the lease manager, takes the node's shards once
// synchronously (so it serves them when Start returns), then keeps them in
// the background.
func (m *Main) startLeases(ctx context.Context, leases *persist.Leases) error {
	ln, advertised, err := listenInternal(m.cfg.InternalAddr, m.cfg.InternalBind)
	if err != nil {
		return err
	}
	mgr, err := cluster.NewManager(cluster.Config{
		Node: m.cfg.NodeID, Incarnation: m.journal.Incarnation(), InternalAddr: advertised,
		TTL: m.cfg.LeaseTTL, RenewEvery: m.cfg.LeaseTTL / 3, Margin: m.cfg.LeaseTTL / 6, Store: leases,
		Drain:  func(ctx context.Context, s actors.Shard) { m.sys.DrainShard(ctx, s) },
		Lost:   func(shards []actors.Shard) { m.sys.DropShards(shards) },
		Gained: func(ls []cluster.Lease) { m.foldAsync(leaseShards(ls)) },
	})
	if err != nil {
		_ = ln.Close()
		return err
	}
	m.owners.m = mgr
	m.node = &clusterNode{mgr: mgr, ln: ln, addr: advertised}
	return leases.Register(ctx, m.cfg.NodeID, m.journal.Incarnation(), advertised)
}

// listenInternal listens for peers. INTERNAL_ADDR is what they dial: a
// literal IP is bound as is; a name (a pod or container name) binds the
// port on every interface; INTERNAL_BIND, when set, is bound instead. Port
// 0 (tests) advertises the port chosen.
func listenInternal(addr, bind string) (net.Listener, string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("INTERNAL_ADDR: %w", err)
	}
	switch {
	case bind != "":
		port = "" // advertised as given
	case net.ParseIP(host) == nil:
		bind = ":" + port
	default:
		bind = addr
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, "", fmt.Errorf("internal listen: %w", err)
	}
	if port == "0" {
		_, p, _ := net.SplitHostPort(ln.Addr().String())
		addr = net.JoinHostPort(host, p)
	}
	return ln, addr, nil
}

// runLeases starts the background loops once the actors exist.
func (m *Main) runLeases(ctx context.Context) {
	n := m.node
	n.mgr.Tick(ctx) // hold this node's shards before serving
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(2)
	go func() { defer n.wg.Done(); n.mgr.Run(runCtx) }()
	go func() { defer n.wg.Done(); m.pollFolds(runCtx) }()
}

// pollFolds folds the pending credits of held shards every foldPoll: a
// lost nudge costs latency only.
func (m *Main) pollFolds(ctx context.Context) {
	t := time.NewTicker(foldPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		held := m.node.mgr.HeldShards()
		if len(held) == 0 {
			continue
		}
		c, cancel := context.WithTimeout(ctx, foldTimeout)
		pending, n, age, err := m.store.Pending(c, held)
		m.node.pendingCount.Store(n)
		m.node.pendingAge.Store(int64(age))
		if err == nil && len(pending) > 0 {
			err = m.sys.Fold(c, pending)
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			slog.Warn("cluster: folding pending credits failed; retrying", "err", err)
		}
	}
}

func (m *Main) foldAsync(shards []actors.Shard) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), foldTimeout)
		defer cancel()
		if m.sys != nil {
			_ = m.sys.Fold(ctx, shards)
		}
	}()
}

func (m *Main) foldOne(ctx context.Context, s actors.Shard) error {
	if _, ok := m.node.mgr.Lease(s); !ok {
		return actors.ErrNotOwner
	}
	return m.sys.Fold(ctx, []actors.Shard{s})
}

func leaseShards(ls []cluster.Lease) []actors.Shard {
	out := make([]actors.Shard, len(ls))
	for i, l := range ls {
		out[i] = l.Shard
	}
	return out
}

// startInternal serves forwarded requests and the internal endpoints on
// INTERNAL_ADDR.
func (m *Main) startInternal(srv *api.Server) error {
	n := m.node
	ln := n.ln
	n.internal = srv.HTTPServer()
	n.internal.Handler = srv.InternalHandler(func() []byte { return ownersMap(n.mgr) }, m.foldOne)
	go m.serve("internal", func() error { return n.internal.Serve(ln) })
	return nil
}

// stopCluster hands the node's shards off (drain, release), deregisters it
// and stops the internal listener.
func (m *Main) stopCluster(ctx context.Context) error {
	n := m.node
	if n.cancel != nil {
		n.cancel()
		n.wg.Wait()
	}
	if n.internal != nil {
		return n.internal.ShutdownWithContext(ctx)
	}
	if n.ln != nil {
		return n.ln.Close()
	}
	return nil
}

// acquireAlone takes every shard for a node that runs alone.
func acquireAlone(ctx context.Context, leases *persist.Leases, incarnation int64) (*actors.StaticOwner, error) {
	ls, err := leases.AcquireAll(ctx, singleWriterID, incarnation)
	if err != nil {
		return nil, err
	}
	var o actors.StaticOwner
	for _, l := range ls {
		o[l.Shard] = l.Epoch
	}
	return &o, nil
}

// InternalAddr returns the advertised internal address ("" for a node
// alone).
func (m *Main) InternalAddr() string {
	if m.node == nil {
		return ""
	}
	return m.node.addr
}

// debugHandlers are the admin listener's extra endpoints: GET
// /debug/actors lists the resident actors as "user shard epoch" lines (the
// cluster tests sample them on every node).
func (m *Main) debugHandlers() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /debug/actors": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			for _, r := range m.sys.Residents() {
				fmt.Fprintf(w, "%s %d %d\n", r.User, r.Shard, r.Epoch)
			}
		},
	}
}
