package cluster

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"merch/actors"
)

// Lease is a held shard lease.
type Lease struct {
	Shard actors.Shard
	Epoch uint64
}

// Owner is one shard's lease as the database sees it.
type Owner struct {
	Shard       actors.Shard
	Node        string
	Incarnation int64
	Epoch       uint64
	Live        bool // not expired (database clock)
}

// Node is a registered node.
type Node struct {
	ID           string
	Incarnation  int64
	InternalAddr string
	Live         bool // heartbeat younger than the TTL
}

// Store is the lease table (persist.Leases). See persist/lease.go.
type Store interface {
	Register(ctx context.Context, node string, incarnation int64, internalAddr string) error
	Deregister(ctx context.Context, node string, incarnation int64) error
	Acquire(ctx context.Context, node string, incarnation int64, shards []actors.Shard, ttl time.Duration) ([]Lease, error)
	Renew(ctx context.Context, node string, incarnation int64, leases []Lease, ttl time.Duration) ([]Lease, error)
	Release(ctx context.Context, node string, incarnation int64, leases []Lease) error
	Held(ctx context.Context, node string, incarnation int64) (int64, []Lease, error)
	View(ctx context.Context, liveFor time.Duration) ([]Owner, []Node, error)
}

// Config builds a Manager. Every field is required unless it says
// otherwise.
type Config struct {
	Node         string // NODE_ID
	Incarnation  int64  // this process's (the journal's claim)
	InternalAddr string // where peers reach this node
	TTL          time.Duration
	RenewEvery   time.Duration // TTL/3
	Margin       time.Duration // the local deadline's safety margin
	Store        Store
	// Drain stops serving shard s before its lease is released (planned
	// handoff): refuse new requests, let in-flight ones finish (their
	// records commit), passivate the shard's actors. Bounded by ctx.
	Drain func(ctx context.Context, s actors.Shard)
	// Lost is told the shards whose leases were lost: drop their actors.
	Lost func(shards []actors.Shard)
	// Gained (may be nil) is told the leases just acquired.
	Gained func(leases []Lease)
	// Now is the monotonic clock; nil: time.Now. Tests inject their own.
	Now func() time.Time
}

func (c *Config) validate() error {
	switch {
	case c.Node == "" || c.InternalAddr == "" || c.Store == nil || c.Drain == nil || c.Lost == nil:
		return errors.New("cluster: incomplete Config")
	case c.TTL <= 0 || c.RenewEvery <= 0 || c.RenewEvery >= c.TTL || c.Margin < 0 || c.Margin >= c.TTL-c.RenewEvery:
		return errors.New("cluster: need 0 < RenewEvery < TTL and 0 ≤ Margin < TTL − RenewEvery")
	}
	return nil
}

// Manager holds a node's shard leases and its view of the cluster. Lease,
// Owner and Holds are called on every request and read atomics; Run and
// Refresh do the rest.
type Manager struct {
	cfg  Config
	base time.Time
	// Per shard: the epoch held (0: none) and the local deadline (clock
	// nanoseconds since base; 0: none).
	epoch    [actors.ShardCount]atomic.Uint64
	deadline [actors.ShardCount]atomic.Int64
	view     atomic.Pointer[view]
	viewMu   sync.Mutex // serialises reading and storing views

	mu       sync.Mutex // serialises Run's tick and Refresh; guards held
	held     map[actors.Shard]uint64
	renewed  atomic.Int64 // ticks whose renewal succeeded (tests, metrics)
	failed   atomic.Int64 // renewals that failed
	handoffs atomic.Int64 // shards handed off
}

// NewManager returns a Manager that holds nothing yet; Run starts it.
func NewManager(cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg, base: cfg.Now(), held: map[actors.Shard]uint64{}}
	m.view.Store(&view{addr: map[string]string{}})
	return m, nil
}

func (m *Manager) clock() int64 { return int64(m.cfg.Now().Sub(m.base)) }

// Lease returns the epoch of the node's lease on s while it may answer for
// s (before its local deadline); ok is false otherwise.
func (m *Manager) Lease(s actors.Shard) (epoch uint64, ok bool) {
	e := m.epoch[s].Load()
	return e, e != 0 && m.deadline[s].Load() > m.clock()
}

// Holds reports whether the node holds s under epoch (the journal's
// check after a fence; the local deadline does not matter for writing:
// the database fences).
func (m *Manager) Holds(s actors.Shard, epoch uint64) bool {
	return epoch != 0 && m.epoch[s].Load() == epoch
}

// Run registers the node and keeps its leases until ctx ends, then hands
// every shard off and deregisters (planned shutdown). The caller owns the
// goroutine.
func (m *Manager) Run(ctx context.Context) {
	m.registerUntil(ctx)
	t := time.NewTicker(m.cfg.RenewEvery)
	defer t.Stop()
	for {
		m.Tick(ctx)
		select {
		case <-ctx.Done():
			m.shutdown()
			return
		case <-t.C:
		}
	}
}

func (m *Manager) registerUntil(ctx context.Context) {
	for ctx.Err() == nil {
		c, cancel := context.WithTimeout(ctx, m.cfg.RenewEvery)
		err := m.cfg.Store.Register(c, m.cfg.Node, m.cfg.Incarnation, m.cfg.InternalAddr)
		cancel()
		if err == nil {
			return
		}
		slog.Warn("cluster: register node failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(m.cfg.RenewEvery):
		}
	}
}

// Tick renews, reads the view, acquires and hands off once (Run calls it
// every RenewEvery; tests call it directly).
func (m *Manager) Tick(ctx context.Context) {
	leave := m.tick(ctx)
	m.handoff(ctx, leave) // outside mu: draining waits for requests whose batches may need Refresh
}

// tick does everything but the handoff, under mu, and returns the shards
// to hand off.
func (m *Manager) tick(ctx context.Context) []actors.Shard {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, cancel := context.WithTimeout(ctx, m.cfg.RenewEvery)
	defer cancel()
	m.renew(c)
	m.viewMu.Lock()
	err := m.readView(c)
	v := m.view.Load()
	m.viewMu.Unlock()
	if err != nil {
		slog.Warn("cluster: reading the owners failed", "err", err)
		return nil
	}
	var want []actors.Shard
	var leave []actors.Shard
	for s := range actors.ShardCount {
		sh := actors.Shard(s)
		target := Target(sh, v.live)
		_, mine := m.held[sh]
		switch {
		case target == m.cfg.Node && !mine && (!v.owners[s].Live || v.owners[s].Node == m.cfg.Node):
			want = append(want, sh)
		case mine && target != "" && target != m.cfg.Node:
			leave = append(leave, sh)
		}
	}
	m.acquire(c, want)
	for _, sh := range leave {
		m.deadline[sh].Store(0) // stop answering at once: new requests are forwarded or refused
	}
	return leave
}

// renew extends every held lease; send time + TTL − Margin is the new
// deadline of each one returned, and the ones not returned are lost.
func (m *Manager) renew(ctx context.Context) {
	if len(m.held) == 0 {
		_ = m.cfg.Store.Register(ctx, m.cfg.Node, m.cfg.Incarnation, m.cfg.InternalAddr) // heartbeat
		return
	}
	leases := make([]Lease, 0, len(m.held))
	for s, e := range m.held {
		leases = append(leases, Lease{Shard: s, Epoch: e})
	}
	sent := m.clock()
	kept, err := m.cfg.Store.Renew(ctx, m.cfg.Node, m.cfg.Incarnation, leases, m.cfg.TTL)
	if err != nil {
		m.failed.Add(1)
		slog.Warn("cluster: lease renewal failed; answering until the local deadlines", "err", err)
		return
	}
	m.renewed.Add(1)
	deadline := sent + int64(m.cfg.TTL-m.cfg.Margin)
	got := map[actors.Shard]bool{}
	for _, l := range kept {
		got[l.Shard] = true
		m.deadline[l.Shard].Store(deadline)
	}
	var lost []actors.Shard
	for _, l := range leases {
		if !got[l.Shard] {
			lost = append(lost, l.Shard)
		}
	}
	m.drop(lost)
}

func (m *Manager) acquire(ctx context.Context, want []actors.Shard) {
	if len(want) == 0 {
		return
	}
	sent := m.clock()
	got, err := m.cfg.Store.Acquire(ctx, m.cfg.Node, m.cfg.Incarnation, want, m.cfg.TTL)
	if err != nil {
		slog.Warn("cluster: acquiring shards failed", "err", err)
		return
	}
	deadline := sent + int64(m.cfg.TTL-m.cfg.Margin)
	m.viewMu.Lock()
	v := *m.view.Load() // the view predates the acquisition: show it
	for _, l := range got {
		m.held[l.Shard] = l.Epoch
		m.epoch[l.Shard].Store(l.Epoch)
		m.deadline[l.Shard].Store(deadline)
		v.owners[l.Shard] = Owner{Shard: l.Shard, Node: m.cfg.Node, Incarnation: m.cfg.Incarnation, Epoch: l.Epoch, Live: true}
	}
	m.view.Store(&v)
	m.viewMu.Unlock()
	if len(got) > 0 {
		slog.Info("cluster: shards acquired", "count", len(got))
		if m.cfg.Gained != nil {
			m.cfg.Gained(got)
		}
	}
}

// handoff drains and releases shards placed on another live node (or all
// of them at shutdown). Called without mu.
func (m *Manager) handoff(ctx context.Context, shards []actors.Shard) {
	if len(shards) == 0 {
		return
	}
	var release []Lease
	for _, s := range shards {
		m.deadline[s].Store(0)
		if e := m.epoch[s].Load(); e != 0 {
			release = append(release, Lease{Shard: s, Epoch: e})
		}
	}
	dctx, cancel := context.WithTimeout(ctx, m.cfg.TTL)
	for _, s := range shards {
		m.cfg.Drain(dctx, s)
	}
	cancel()
	rctx, cancel := context.WithTimeout(context.Background(), m.cfg.RenewEvery)
	defer cancel()
	if err := m.cfg.Store.Release(rctx, m.cfg.Node, m.cfg.Incarnation, release); err != nil {
		slog.Warn("cluster: releasing shards failed; they expire instead", "err", err)
	}
	m.mu.Lock()
	m.drop(shards)
	m.mu.Unlock()
	m.handoffs.Add(int64(len(shards)))
	slog.Info("cluster: shards handed off", "count", len(shards))
}

// drop forgets shards (lost or released) and tells the owner of the
// actors; mu is held.
func (m *Manager) drop(shards []actors.Shard) {
	if len(shards) == 0 {
		return
	}
	for _, s := range shards {
		delete(m.held, s)
		m.epoch[s].Store(0)
		m.deadline[s].Store(0)
	}
	m.cfg.Lost(shards)
}

// Refresh implements persist.Ownership: after a batch was fenced it
// re-reads what the node holds, drops what it lost, and returns the
// writer's ownership version.
func (m *Manager) Refresh(ctx context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	version, leases, err := m.cfg.Store.Held(ctx, m.cfg.Node, m.cfg.Incarnation)
	if err != nil {
		return 0, err
	}
	still := map[actors.Shard]uint64{}
	for _, l := range leases {
		still[l.Shard] = l.Epoch
	}
	var lost []actors.Shard
	for s, e := range m.held {
		if still[s] != e {
			lost = append(lost, s)
		}
	}
	m.drop(lost)
	return version, nil
}

// shutdown hands every held shard off and deregisters the node.
func (m *Manager) shutdown() {
	m.mu.Lock()
	shards := make([]actors.Shard, 0, len(m.held))
	for s := range m.held {
		shards = append(shards, s)
	}
	m.mu.Unlock()
	slices.Sort(shards)
	m.handoff(context.Background(), shards)
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.RenewEvery)
	defer cancel()
	if err := m.cfg.Store.Deregister(ctx, m.cfg.Node, m.cfg.Incarnation); err != nil {
		slog.Warn("cluster: deregister failed", "err", err)
	}
}
