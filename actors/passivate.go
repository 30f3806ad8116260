package actors

import "time"

// janitor passivates idle and broken actors every SweepInterval.
func (s *System) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	var victims []*handle
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			victims = s.sweep(victims[:0], monotime()-int64(s.cfg.IdleTTL))
		}
	}
}

// sweep passivates handles idle since before idleBefore (or broken, or of
// a lease the node no longer holds) with nothing in flight.
func (s *System) sweep(victims []*handle, idleBefore int64) []*handle {
	s.dir.forEach(func(h *handle) {
		if h.isReady() && h.err == nil && h.inflight.Load() == 0 &&
			(h.broken.Load() || h.lastUsed.Load() < idleBefore || !s.current(h)) {
			victims = append(victims, h)
		}
	})
	for _, h := range victims {
		s.passivate(h)
	}
	clear(victims)
	return victims
}

// passivate stops h's actor if nothing is pinned on it: remove from the
// directory first, then stop the actor, whose mailbox is empty. False when
// h is pinned (or already gone).
func (s *System) passivate(h *handle) bool {
	if !h.inflight.CompareAndSwap(0, -1) {
		return false
	}
	s.dir.stripe(h.name).remove(h)
	s.engine.Poison(h.pid)
	s.active.Add(-1)
	s.metrics.Passivated()
	return true
}

// PassivateIdle passivates every actor idle for at least idle; it returns
// how many are still resident. For tests and shutdown reports.
func (s *System) PassivateIdle(idle time.Duration) int64 {
	s.sweep(nil, monotime()-int64(idle))
	return s.active.Load()
}
