package persist

import (
	"context"
	"fmt"
	"log/slog"
	"merch/actors"
)

// dropStale completes the records made under a lease the node does not
// hold now (an actor of an older epoch) with actors.ErrNotOwner, before
// they are sent: the version check on the server only tells that the
// node's view of its leases is current, not that every record is of it.
// False when nothing is left to write.
func (j *Journal) dropStale(b *batch) bool {
	kept := b.entries[:0]
	for i := range b.entries {
		if j.holds(&b.entries[i].rec) {
			kept = append(kept, b.entries[i])
			continue
		}
		b.entries[i].rec.Done.JournalDone(actors.ErrNotOwner)
	}
	clear(b.entries[len(kept):])
	b.entries = kept
	return len(kept) > 0
}

// refreshOwnership handles a batch the fence refused (cause): no attempt of
// it committed (journal_begin reports "already committed" before "not
// owner") and none can (the version only grows), so its id is reused. The
// node re-reads what it holds; records of leases it lost fail with
// actors.ErrNotOwner, the rest are written again.
func (j *Journal) refreshOwnership(b *batch, cause error) (outcome, error) {
	if j.cfg.Ownership == nil {
		j.halt(fmt.Errorf("persist: batch %d: another node took this single node's shards: %w", b.id, cause))
		return halted, cause
	}
	backoff := j.cfg.RetryMin
	for {
		ctx, cancel := context.WithTimeout(context.Background(), j.cfg.AttemptTimeout)
		v, err := j.cfg.Ownership.Refresh(ctx)
		cancel()
		if err == nil {
			slog.Warn("journal batch fenced: this node lost shards; their records fail", "batch", b.id,
				"version", j.version, "now", v)
			j.version = v
			return fenced, cause
		}
		j.healthy.Store(false)
		if !j.wait(backoff) {
			return abandoned, err
		}
		backoff = min(backoff*2, j.cfg.RetryMax)
	}
}

// notOwner completes the records of b whose leases were lost with
// actors.ErrNotOwner (definite: nothing was written) and writes the rest
// again, in order.
func (j *Journal) notOwner(b *batch) {
	held := newBatch()
	for i := range b.entries {
		r := &b.entries[i].rec
		if j.holds(r) {
			held.entries = append(held.entries, b.entries[i])
			continue
		}
		r.Done.JournalDone(actors.ErrNotOwner)
	}
	if len(held.entries) > 0 {
		held.aggregate()
		j.commitOrSplit(held)
	}
}

// holds reports whether the node still holds every lease r was made under.
func (j *Journal) holds(r *actors.Record) bool {
	own := j.cfg.Ownership
	switch r.Kind {
	case actors.Folded:
		return own.Holds(r.Shard, r.Epoch)
	case actors.Transferred:
		return own.Holds(actors.ShardOf(r.User), r.Epoch) && own.Holds(actors.ShardOf(r.Peer), r.PeerEpoch)
	}
	return own.Holds(actors.ShardOf(r.User), r.Epoch)
}
