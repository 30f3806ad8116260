package cluster

import (
	"context"
	"slices"

	"merch/actors"
)

// view is the last read of owners and nodes.
type view struct {
	owners [actors.ShardCount]Owner
	addr   map[string]string // live node → internal address
	live   []string          // live node IDs, sorted
	readAt int64             // clock when its read began
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

// RefreshView re-reads the owners (a misdirected forward found the view
// wrong) unless a view whose read began after this call is there by the
// time it gets its turn: a burst of misdirected requests costs one read,
// and each of them then routes by a view read after its own failure.
func (m *Manager) RefreshView(ctx context.Context) {
	asked := m.clock()
	m.viewMu.Lock()
	defer m.viewMu.Unlock()
	if m.view.Load().readAt >= asked {
		return
	}
	_ = m.readView(ctx)
}

// readView reads the owners and nodes and stores them as the new view,
// with this node's own leases as it holds them; viewMu is held.
func (m *Manager) readView(ctx context.Context) error {
	readAt := m.clock()
	owners, nodes, err := m.cfg.Store.View(ctx, m.cfg.TTL)
	if err != nil {
		return err
	}
	v := newView(owners, nodes)
	v.readAt = readAt
	for s := range actors.ShardCount {
		if e := m.epoch[s].Load(); e != 0 {
			v.owners[s] = Owner{Shard: actors.Shard(s), Node: m.cfg.Node, Incarnation: m.cfg.Incarnation, Epoch: e, Live: true}
		}
	}
	m.view.Store(v)
	return nil
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
