package actors

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/anthdm/hollywood/actor"
)

// activations numbers every spawn in the process, so each activation's PID
// is unique even if a passivated predecessor is still being removed from
// hollywood's registry, or two Systems share an engine.
var activations atomic.Uint64

// resolve returns the user's live handle, loading the user if needed;
// until (monotime) bounds the wait.
func (s *System) resolve(name string, until int64) (*handle, error) {
	return s.resolveTraced(name, until, nil)
}

// resolveTraced is resolve on behalf of the client request rid: a failed
// load names it.
func (s *System) resolveTraced(name string, until int64, rid []byte) (*handle, error) {
	sp := s.dir.stripe(name)
	h := sp.get(name)
	if h == nil || h.dead() || h.broken.Load() || !s.current(h) {
		h = s.activate(sp, name, rid)
	}
	return s.await(h, until)
}

// resolveBytes is resolve for a name still in a request buffer: a resident
// user is found without allocating.
func (s *System) resolveBytes(name []byte, until int64, rid []byte) (*handle, error) {
	sp := s.dir.stripeBytes(name)
	h := sp.getBytes(name)
	if h == nil || h.dead() || h.broken.Load() || !s.current(h) {
		h = s.activate(sp, string(name), rid)
	}
	return s.await(h, until)
}

// remaining returns the time left until the deadline (at least 1 ns, so a
// timer always fires).
func remaining(until int64) time.Duration {
	return max(time.Duration(until-monotime()), 1)
}

// await waits until h is loaded, or until the deadline.
func (s *System) await(h *handle, until int64) (*handle, error) {
	if !h.isReady() {
		t := getTimer(remaining(until))
		select {
		case <-h.ready:
			putTimer(t)
		case <-t.C:
			putTimer(t)
			return nil, ErrUnavailable
		}
	}
	if h.err != nil {
		return nil, h.err
	}
	return h, nil
}

// pinRetries bounds re-resolving a user whose actor was passivated between
// lookup and pin (each retry finds or loads a fresh actor).
const pinRetries = 8

// resolvePinned resolves and pins name (or nameBytes when not nil),
// retrying when it races with passivation; rid is the client request's id
// (see resolveTraced).
func (s *System) resolvePinned(name string, nameBytes []byte, limit int32, until int64, rid []byte) (*handle, error) {
	for range pinRetries {
		var h *handle
		var err error
		if nameBytes != nil {
			h, err = s.resolveBytes(nameBytes, until, rid)
		} else {
			h, err = s.resolveTraced(name, until, rid)
		}
		if err != nil {
			return nil, err
		}
		dead, err := h.pin(limit)
		if !dead {
			return h, err
		}
	}
	return nil, ErrUnavailable
}

// activate installs a loading handle for name and starts loading it
// (single flight: concurrent callers find the handle and wait on ready, each
// with its own deadline; the load itself is bounded by LoadTimeout).
func (s *System) activate(sp *stripe, name string, rid []byte) *handle {
	shard := ShardOf(name)
	epoch, ok := s.lease(shard)
	if !ok {
		return notOwnerHandle
	}
	sp.mu.Lock()
	for {
		h := sp.m[name]
		if h == nil || h.dead() {
			break
		}
		if h.epoch == epoch && !h.broken.Load() {
			sp.mu.Unlock()
			return h
		}
		// Loaded under an older lease, or its state is suspect (a panic, a
		// missed fold): never served again; replaced once its requests are
		// done — by the first request after that, not only the janitor.
		sp.mu.Unlock()
		if !s.passivate(h) {
			if h.epoch == epoch {
				return h // broken, still busy: it refuses new work itself and takes what it is owed
			}
			return busyHandle
		}
		sp.mu.Lock()
	}
	if sp.isAbsent(name, monotime()) {
		sp.mu.Unlock()
		return absentHandle
	}
	h := newHandle(s, name, shard, epoch)
	sp.m[name] = h
	sp.mu.Unlock()
	s.wg.Add(1)                   // Close waits for loads in progress (each bounded by LoadTimeout)
	go s.load(sp, h, string(rid)) // activation is not a hot path
	return h
}

// load reads the user from the store and spawns its actor, or records why
// not and drops the handle.
func (s *System) load(sp *stripe, h *handle, rid string) {
	defer s.wg.Done()
	name := h.name
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LoadTimeout)
	st, err := s.cfg.Store.LoadUser(ctx, name)
	cancel()
	var w Wallet
	if err == nil {
		w, err = LoadWallet(&st)
	}
	if err != nil {
		h.err = err
		if errors.Is(err, ErrUnknownUser) {
			sp.markAbsent(h, s.cfg.AbsentTTL)
		} else {
			slog.Warn("load user failed", "user", name, "request_id", rid, "err", err)
			h.err = ErrUnavailable
			sp.remove(h)
		}
		close(h.ready)
		return
	}
	h.hash = st.PasswordHash
	u := &user{h: h, sys: s, wallet: w, folds: st.Folds}
	for _, k := range st.Keys {
		u.keys.add(k, false, nil)
	}
	// The store returns at most KeysPerUserMax keys: older ones may exist.
	u.keys.evicted = u.keys.evicted || len(st.Keys) >= KeysPerUserMax
	s.spawn(h, u)
}

// spawn starts the actor and publishes the handle. hollywood runs the
// receiver's Initialized and Started on this goroutine; the state is
// already loaded, so they do nothing.
func (s *System) spawn(h *handle, u *user) {
	id := h.name + "#" + strconv.FormatUint(activations.Add(1), 36)
	h.pid = s.engine.Spawn(func() actor.Receiver { return u }, "u",
		actor.WithID(id), actor.WithInboxSize(s.cfg.InboxSize))
	h.lastUsed.Store(monotime()) // idle from now, not since the process started
	s.active.Add(1)
	s.metrics.Activated()
	close(h.ready)
}
