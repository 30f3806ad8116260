package actors

import (
	"context"
	"time"
)

// Owner tells the actors which shards this node may answer for. In a
// cluster it is the lease manager (package cluster): a shard is held while
// the node's lease on it is valid, under the lease's epoch. Safe for
// concurrent use; called on every request, so it must be cheap.
type Owner interface {
	Lease(s Shard) (epoch uint64, ok bool)
}

// StaticOwner holds every shard for good under fixed epochs: a node that
// runs alone (its leases never expire).
type StaticOwner [ShardCount]uint64

// Lease implements Owner.
func (o *StaticOwner) Lease(s Shard) (uint64, bool) { return o[s], true }

// lease returns the node's lease on sh; without an Owner every shard is
// held under epoch 0 (tests).
func (s *System) lease(sh Shard) (uint64, bool) {
	if s.cfg.Owner == nil {
		return 0, true
	}
	return s.cfg.Owner.Lease(sh)
}

// Handles that answer without an actor: a shard this node does not hold,
// and a user whose actor from a lost lease is still finishing its work.
var (
	notOwnerHandle = doneHandle(ErrNotOwner)
	busyHandle     = doneHandle(ErrUnavailable)
)

func doneHandle(err error) *handle {
	h := &handle{ready: make(chan struct{}), err: err}
	close(h.ready)
	return h
}

// current reports whether h was loaded under the lease the node holds on
// its shard now. An actor loaded under an older epoch is never served
// again: its memory may miss what another owner committed meanwhile.
func (s *System) current(h *handle) bool {
	e, ok := s.lease(h.shard)
	return ok && e == h.epoch
}

// drainPoll paces DrainShard's wait for in-flight requests.
const drainPoll = 5 * time.Millisecond

// DrainShard passivates the actors of shard sh once nothing is in flight
// for them, or when ctx ends (planned handoff; the lease manager has
// already stopped the node answering for sh, so nothing new is pinned).
// Their records are committed by then: a pin is released only when its
// request was answered.
func (s *System) DrainShard(ctx context.Context, sh Shard) {
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for s.passivateShard(sh) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DropShards passivates what it can of the actors of lost shards now; the
// janitor takes the rest once their requests finish (they are not current).
func (s *System) DropShards(shards []Shard) {
	for _, sh := range shards {
		s.passivateShard(sh)
	}
}

// passivateShard passivates the unpinned actors of sh and returns how many
// are still pinned.
func (s *System) passivateShard(sh Shard) int {
	var victims []*handle
	pinned := 0
	s.dir.forEach(func(h *handle) {
		if h.shard == sh && h.isReady() && h.err == nil {
			victims = append(victims, h)
		}
	})
	for _, h := range victims {
		if !s.passivate(h) {
			pinned++
		}
	}
	return pinned
}

// Resident is one resident user actor, for the cluster tests' sampling of
// activations (no user may be live on two nodes under the current epoch).
type Resident struct {
	User  string
	Shard Shard
	Epoch uint64
}

// Residents lists the resident actors (a directory scan: not for hot paths).
func (s *System) Residents() []Resident {
	var out []Resident
	s.dir.forEach(func(h *handle) {
		if h.isReady() && h.err == nil && !h.dead() && s.current(h) {
			out = append(out, Resident{User: h.name, Shard: h.shard, Epoch: h.epoch})
		}
	})
	return out
}
