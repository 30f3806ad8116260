package actors

import (
	"sync"
	"sync/atomic"

	"github.com/anthdm/hollywood/actor"
)

// System is the facade over the user actors: it resolves users (loading and
// spawning them on first use, single flight), pins them, sends commands and
// waits for replies with a deadline. Safe for concurrent use.
type System struct {
	cfg     Config
	engine  *actor.Engine
	journal Journal
	metrics Metrics
	dir     directory
	depth   atomic.Int64 // messages queued in all user mailboxes
	active  atomic.Int64 // resident actors
	// creditWaitsMissed counts transfers to other owners answered before
	// their fold was confirmed.
	creditWaitsMissed atomic.Int64

	stop chan struct{}
	wg   sync.WaitGroup
}

// NewSystem builds a System and starts its janitor; Close stops it.
func NewSystem(cfg Config) (*System, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &System{cfg: cfg, engine: cfg.Engine, journal: cfg.Journal, metrics: cfg.Metrics,
		stop: make(chan struct{})}
	s.dir.init()
	s.wg.Add(1)
	go s.janitor()
	return s, nil
}

// Close stops the janitor and waits for loads in progress. Actors stay as
// they are; the engine is the caller's.
func (s *System) Close() {
	close(s.stop)
	s.wg.Wait()
}

// Stats returns the current gauges. MailboxDepthMax scans the directory.
func (s *System) Stats() Stats {
	st := Stats{MailboxDepth: s.depth.Load(), Active: s.active.Load()}
	s.dir.forEach(func(h *handle) {
		if q := int64(h.queued.Load()); q > st.MailboxDepthMax {
			st.MailboxDepthMax = q
		}
	})
	return st
}
