package actors

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anthdm/hollywood/actor"
)

// dirStripes spreads the directory over independently locked maps so lookups
// on different users do not contend. hollywood's registry is one map behind
// one lock and cannot be listed, so we keep our own.
const dirStripes = 64

// handle is the directory's entry for one resident (or loading) user: the
// actor's PID plus infrastructure shared outside the actor. Concurrency:
// name, sys are immutable; pid, hash and err are written before ready is
// closed and only read after; the rest are atomics.
type handle struct {
	name  string
	sys   *System
	shard Shard
	epoch uint64 // of the node's lease on shard when the handle was made
	ready chan struct{}
	pid   *actor.PID
	hash  []byte
	err   error

	// inflight counts pins: requests sent or about to be sent to this actor
	// that are not finished. -1 means passivated: the handle is dead and
	// must be replaced. Passivation is CompareAndSwap(0, -1), so an actor
	// is only stopped when nothing is queued for it or owed to it.
	inflight atomic.Int32
	// own counts the pins of this user's own requests, the ones the
	// per-user in-flight limit bounds. Credits arriving for a hot receiver
	// pin it too, but must not make its own requests fail.
	own      atomic.Int32
	queued   atomic.Int32 // messages in the mailbox, for metrics
	lastUsed atomic.Int64 // monotime of the last pin
	broken   atomic.Bool  // set by the actor after a panic
	digest   atomic.Pointer[[32]byte]
}

func newHandle(s *System, name string, shard Shard, epoch uint64) *handle {
	return &handle{name: name, sys: s, shard: shard, epoch: epoch, ready: make(chan struct{})}
}

func (h *handle) isReady() bool {
	select {
	case <-h.ready:
		return true
	default:
		return false
	}
}

func (h *handle) dead() bool { return h.inflight.Load() < 0 }

// errPassivated is internal: the handle died between lookup and pin.
var errPassivated = ErrUnavailable

// pin keeps the actor resident for one request. limit > 0 marks the
// user's own request, bounded by the per-user in-flight limit (release
// with unpinOwn); 0 is a credit pin on a recipient, bounded by its
// senders' limits (release with unpin).
func (h *handle) pin(limit int32) (dead bool, err error) {
	for {
		n := h.inflight.Load()
		if n < 0 {
			return true, errPassivated
		}
		if h.inflight.CompareAndSwap(n, n+1) {
			break
		}
	}
	if limit > 0 && h.own.Add(1) > limit {
		h.unpinOwn()
		return false, ErrUserBusy
	}
	h.lastUsed.Store(monotime())
	return false, nil
}

func (h *handle) unpin() {
	if h.inflight.Add(-1) < 0 {
		panic("actors: invariant: unpinned more than pinned")
	}
}

func (h *handle) unpinOwn() {
	h.own.Add(-1)
	h.unpin()
}

// enqueue puts r in the actor's mailbox. The caller holds a pin.
func (h *handle) enqueue(r *request) {
	r.enqueued = monotime()
	h.queued.Add(1)
	h.sys.depth.Add(1)
	h.sys.engine.Send(h.pid, r)
}

type stripe struct {
	mu sync.RWMutex
	m  map[string]*handle
	// absent remembers names the store did not know, until a monotime
	// deadline: an unknown recipient then costs no database query per
	// request. Bounded per stripe; a registration forgets the name.
	absent map[string]int64
	// known remembers names of users other nodes own that exist (users are
	// never deleted), so a transfer to them asks the store once.
	known map[string]struct{}
}

// absentPerShardMax bounds the memory of absent names (Config.AbsentTTL):
// when full the stripe's table is dropped; it is only a cache.
const absentPerShardMax = 1024

// absentHandle answers ErrUnknownUser for a name in a stripe's absent
// table. It is never in a directory map.
var absentHandle = func() *handle {
	h := &handle{ready: make(chan struct{}), err: ErrUnknownUser}
	close(h.ready)
	return h
}()

// isAbsent reports whether name is known to be absent; sp.mu is held.
func (sp *stripe) isAbsent(name string, now int64) bool {
	until, ok := sp.absent[name]
	if ok && until <= now {
		delete(sp.absent, name)
		return false
	}
	return ok
}

// markAbsent removes h and remembers its name as absent for ttl (0: not
// at all).
func (sp *stripe) markAbsent(h *handle, ttl time.Duration) {
	sp.mu.Lock()
	if sp.m[h.name] == h {
		delete(sp.m, h.name)
	}
	if ttl > 0 {
		if len(sp.absent) >= absentPerShardMax {
			clear(sp.absent)
		}
		sp.absent[h.name] = monotime() + int64(ttl)
	}
	sp.mu.Unlock()
}

type directory struct {
	seed    maphash.Seed
	stripes [dirStripes]stripe
}

func (d *directory) init() {
	d.seed = maphash.MakeSeed()
	for i := range d.stripes {
		d.stripes[i].m = make(map[string]*handle)
		d.stripes[i].absent = make(map[string]int64)
		d.stripes[i].known = make(map[string]struct{})
	}
}

func (d *directory) stripe(name string) *stripe {
	return &d.stripes[maphash.String(d.seed, name)%dirStripes]
}

func (d *directory) stripeBytes(name []byte) *stripe {
	return &d.stripes[maphash.Bytes(d.seed, name)%dirStripes]
}

func (sp *stripe) getBytes(name []byte) *handle {
	sp.mu.RLock()
	h := sp.m[string(name)] // no allocation: the compiler looks up in place
	sp.mu.RUnlock()
	return h
}

func (sp *stripe) get(name string) *handle {
	sp.mu.RLock()
	h := sp.m[name]
	sp.mu.RUnlock()
	return h
}

// remove deletes h if it is still the entry for its name.
func (sp *stripe) remove(h *handle) {
	sp.mu.Lock()
	if sp.m[h.name] == h {
		delete(sp.m, h.name)
	}
	sp.mu.Unlock()
}

// forEach calls fn for every handle; fn runs under the stripe's read lock
// and must not block.
func (d *directory) forEach(fn func(h *handle)) {
	for i := range d.stripes {
		sp := &d.stripes[i]
		sp.mu.RLock()
		for _, h := range sp.m {
			fn(h)
		}
		sp.mu.RUnlock()
	}
}
