package cluster

import (
	"context"
	"merch/actors"
	"slices"
	"time"
)

// view is the last read of owners and nodes.
type view struct {
	owners [actors.ShardCount]Owner
	addr   map[string]string // live node → internal address
	live   []string          // live node IDs, sorted
}

// Owner returns the node believed to own s and its internal address, from
// the last view; ok is false when no live lease is known.
func (m *Manager) Owner(s actors.Shard) (node, addr string, ok bool) {
	v := m.view.Load()
	o := v.owners[s]
	if !o.Live || o.Node == "" {
		return "", "", false
	}
	a, ok := v.addr[o.Node]
	return o.Node, a, ok
}

// Owners returns the last view of every shard's owner (for the edge's
// routing map).
func (m *Manager) Owners() [actors.ShardCount]Owner { return m.view.Load().owners }

// Addr returns a live node's internal address.
func (m *Manager) Addr(node string) (string, bool) {
	a, ok := m.view.Load().addr[node]
	return a, ok
}

// Renewals returns how many renewals succeeded so far.
func (m *Manager) Renewals() int64 { return m.renewed.Load() }

// RenewFailures returns how many renewals failed so far.
func (m *Manager) RenewFailures() int64 { return m.failed.Load() }

// Handoffs returns how many shards this node handed off so far.
func (m *Manager) Handoffs() int64 { return m.handoffs.Load() }

// Owned returns how many shards the node may answer for now.
func (m *Manager) Owned() int {
	n := 0
	for s := range actors.ShardCount {
		if _, ok := m.Lease(actors.Shard(s)); ok {
			n++
		}
	}
	return n
}

func newView(owners []Owner, nodes []Node) *view {
	v := &view{addr: map[string]string{}}
	for _, o := range owners {
		v.owners[o.Shard] = o
	}
	for _, n := range nodes {
		if n.Live {
			v.addr[n.ID] = n.InternalAddr
			v.live = append(v.live, n.ID)
		}
	}
	slices.Sort(v.live)
	return v
}

// viewRefreshMin spaces forced view refreshes (misdirected requests can
// come in bursts).
const viewRefreshMin = 100 * time.Millisecond

// RefreshView re-reads the owners now (a misdirected forward), at most
// once per viewRefreshMin.
func (m *Manager) RefreshView(ctx context.Context) {
	now := m.clock()
	last := m.lastView.Load()
	if now-last < int64(viewRefreshMin) || !m.lastView.CompareAndSwap(last, now) {
		return
	}
	owners, nodes, err := m.cfg.Store.View(ctx, m.cfg.TTL)
	if err != nil {
		return
	}
	v := newView(owners, nodes)
	for s := range actors.ShardCount { // this node's own leases, as it holds them
		if e := m.epoch[s].Load(); e != 0 {
			v.owners[s] = Owner{Shard: actors.Shard(s), Node: m.cfg.Node, Incarnation: m.cfg.Incarnation, Epoch: e, Live: true}
		}
	}
	m.view.Store(v)
}

// HeldShards returns the shards the node holds (valid or not).
func (m *Manager) HeldShards() []actors.Shard {
	var out []actors.Shard
	for s := range actors.ShardCount {
		if m.epoch[s].Load() != 0 {
			out = append(out, actors.Shard(s))
		}
	}
	return out
}

// Node returns this node's ID.
func (m *Manager) Node() string { return m.cfg.Node }
