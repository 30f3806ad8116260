package actors

import (
	"errors"
	"time"

	"github.com/anthdm/hollywood/actor"
)

// Config builds a System. Every field is required; there are no hidden
// defaults (cmd documents the defaults it passes).
type Config struct {
	Engine  *actor.Engine
	Journal Journal
	Store   Store
	Metrics Metrics // NopMetrics{} for none

	// InboxSize is each actor's initial mailbox ring size. hollywood grows
	// the ring when full and never shrinks it, so keep it small (4–8):
	// ~28 KB per idle actor at the library default of 1024.
	InboxSize int
	// InflightPerUserMax bounds one user's pending requests; above it the
	// user's requests get ErrOverloaded instead of growing the mailbox.
	InflightPerUserMax int
	// IdleTTL: a user actor with nothing in flight for this long is
	// passivated (stopped and dropped from memory).
	IdleTTL time.Duration
	// SweepInterval is how often the janitor looks for idle or broken
	// actors.
	SweepInterval time.Duration
	// LoadTimeout bounds loading one user from the store.
	LoadTimeout time.Duration
	// WriteTimeout bounds waiting for a change to become durable; past it
	// the caller gets ErrNotDurable (outcome unknown).
	WriteTimeout time.Duration
	// ReadTimeout bounds waiting for an actor to answer a read.
	ReadTimeout time.Duration
	// AbsentTTL: a name the store did not know is answered ErrUnknownUser
	// for this long without asking the store again (an unknown recipient
	// would otherwise cost a query per request). Registering the name here
	// ends it at once; a user created elsewhere is seen after it. 0: off.
	AbsentTTL time.Duration
	// Owner says which shards this node may answer for (the lease
	// manager, or a StaticOwner for a node alone). nil: every shard,
	// under epoch 0 (tests).
	Owner Owner
	// Names checks recipients whose shard another node owns; Credits
	// nudges their owner to fold, waiting up to CreditWait. nil (and 0):
	// a node alone, which owns every shard.
	Names      Names
	Credits    Credits
	CreditWait time.Duration
}

func (c *Config) validate() error {
	switch {
	case c.Engine == nil || c.Journal == nil || c.Store == nil || c.Metrics == nil:
		return errors.New("actors: Engine, Journal, Store and Metrics are required")
	case c.InboxSize < 1 || c.InflightPerUserMax < 1:
		return errors.New("actors: InboxSize and InflightPerUserMax must be positive")
	case c.IdleTTL <= 0 || c.SweepInterval <= 0 || c.LoadTimeout <= 0 ||
		c.WriteTimeout <= 0 || c.ReadTimeout <= 0 || c.AbsentTTL < 0:
		return errors.New("actors: durations must be positive")
	}
	return nil
}
