package actors

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anthdm/hollywood/actor"
)

// activations numbers every spawn in the process, so each activation's PID
// is unique even if a passivated predecessor is still being removed from
// hollywood's registry, or two Systems share an engine.
var activations atomic.Uint64

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

// resolve returns the user's live handle, loading the user if needed;
// until (monotime) bounds the wait.
func (s *System) resolve(name string, until int64) (*handle, error) {
	sh := s.dir.shard(name)
	h := sh.get(name)
	if h == nil || h.dead() {
		h = s.activate(sh, name)
	}
	return s.await(h, until)
}

// resolveBytes is resolve for a name still in a request buffer: a resident
// user is found without allocating.
func (s *System) resolveBytes(name []byte, until int64) (*handle, error) {
	sh := s.dir.shardBytes(name)
	h := sh.getBytes(name)
	if h == nil || h.dead() {
		h = s.activate(sh, string(name))
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
// retrying when it races with passivation.
func (s *System) resolvePinned(name string, nameBytes []byte, limit int32, until int64) (*handle, error) {
	for range pinRetries {
		var h *handle
		var err error
		if nameBytes != nil {
			h, err = s.resolveBytes(nameBytes, until)
		} else {
			h, err = s.resolve(name, until)
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
func (s *System) activate(sh *shard, name string) *handle {
	sh.mu.Lock()
	if h := sh.m[name]; h != nil && !h.dead() {
		sh.mu.Unlock()
		return h
	}
	if sh.isAbsent(name, monotime()) {
		sh.mu.Unlock()
		return absentHandle
	}
	h := newHandle(s, name)
	sh.m[name] = h
	sh.mu.Unlock()
	s.wg.Add(1) // Close waits for loads in progress (each bounded by LoadTimeout)
	go s.load(sh, h)
	return h
}

// load reads the user from the store and spawns its actor, or records why
// not and drops the handle.
func (s *System) load(sh *shard, h *handle) {
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
			sh.markAbsent(h, s.cfg.AbsentTTL)
		} else {
			slog.Warn("load user failed", "user", name, "err", err)
			h.err = ErrUnavailable
			sh.remove(h)
		}
		close(h.ready)
		return
	}
	h.hash = st.PasswordHash
	u := &user{h: h, sys: s, wallet: w}
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

// sweep passivates handles idle since before idleBefore (or broken) with
// nothing in flight: remove from the directory first, then stop the actor,
// whose mailbox is empty because nothing is pinned.
func (s *System) sweep(victims []*handle, idleBefore int64) []*handle {
	s.dir.forEach(func(h *handle) {
		if h.isReady() && h.inflight.Load() == 0 &&
			(h.broken.Load() || h.lastUsed.Load() < idleBefore) {
			victims = append(victims, h)
		}
	})
	for _, h := range victims {
		if !h.inflight.CompareAndSwap(0, -1) {
			continue
		}
		s.dir.shard(h.name).remove(h)
		s.engine.Poison(h.pid)
		s.active.Add(-1)
		s.metrics.Passivated()
	}
	clear(victims)
	return victims
}

// PassivateIdle passivates every actor idle for at least idle; it returns
// how many are still resident. For tests and shutdown reports.
func (s *System) PassivateIdle(idle time.Duration) int64 {
	s.sweep(nil, monotime()-int64(idle))
	return s.active.Load()
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

// call sends r to h and waits for the answer until the deadline. On
// timeout r is abandoned (the actor may still write to it) and ok is false.
func (s *System) call(h *handle, r *Request, until int64) (rep reply, ok bool) {
	h.send(r)
	t := getTimer(remaining(until))
	select {
	case rep = <-r.reply:
		putTimer(t)
		putRequest(r)
		return rep, true
	case <-t.C:
		putTimer(t)
		return reply{}, false
	}
}

// Info returns the user's /api/info body: durable state only. The slice is
// immutable and shared; callers must not modify it.
func (s *System) Info(name string) ([]byte, error) {
	until := monotime() + int64(s.cfg.ReadTimeout)
	h, err := s.resolvePinned(name, nil, int32(s.cfg.InflightPerUserMax), until)
	if err != nil {
		return nil, err
	}
	r := getRequest()
	r.op, r.owner, r.held = opInfo, h, heldOwner
	rep, ok := s.call(h, r, until)
	if !ok {
		return nil, ErrUnavailable
	}
	return rep.info, rep.err
}

// Buy buys one item. nil means the purchase is durable. key is an optional
// idempotency key ("" for none).
func (s *System) Buy(name string, item ItemID, key string) error {
	if !item.Valid() {
		return ErrUnknownItem
	}
	until := monotime() + int64(s.cfg.WriteTimeout)
	if key == "" {
		return s.buy(name, item, "", false, until)
	}
	want := KeyOutcome{Key: key, Kind: Purchased, Item: item, Amount: item.Price()}
	return s.keyed(name, want, until, func(checked bool) error { return s.buy(name, item, key, checked, until) })
}

func (s *System) buy(name string, item ItemID, key string, checked bool, until int64) error {
	h, err := s.resolvePinned(name, nil, int32(s.cfg.InflightPerUserMax), until)
	if err != nil {
		return err
	}
	r := getRequest()
	r.op, r.owner, r.held, r.item, r.key, r.keyChecked = opBuy, h, heldOwner, item, key, checked
	return s.write(h, r, until)
}

// Send transfers amount from one user to another. nil means the transfer is
// durable and visible in both users' info. key is an optional idempotency
// key.
func (s *System) Send(from, to string, amount Coins, key string) error {
	return s.SendBytes(from, []byte(to), amount, key)
}

// SendBytes is Send with the recipient's name still in a request buffer; it
// is not retained.
func (s *System) SendBytes(from string, to []byte, amount Coins, key string) error {
	switch {
	case from == string(to):
		return ErrSelfTransfer
	case amount <= 0:
		return ErrBadAmount
	}
	until := monotime() + int64(s.cfg.WriteTimeout)
	if key == "" {
		return s.send(from, to, amount, "", false, until)
	}
	want := KeyOutcome{Key: key, Kind: Transferred, Peer: string(to), Amount: amount}
	return s.keyed(from, want, until, func(checked bool) error { return s.send(from, to, amount, key, checked, until) })
}

func (s *System) send(from string, to []byte, amount Coins, key string, checked bool, until int64) error {
	h, err := s.resolvePinned(from, nil, int32(s.cfg.InflightPerUserMax), until)
	if err != nil {
		return err
	}
	peer, err := s.resolvePinned("", to, 0, until)
	if err != nil {
		h.unpinOwn()
		if errors.Is(err, ErrUnknownUser) {
			err = ErrUnknownRecipient
		}
		return err
	}
	r := getRequest()
	r.op, r.owner, r.peer, r.held, r.amount = opSend, h, peer, heldOwner|heldPeer, amount
	r.key, r.keyChecked = key, checked
	return s.write(h, r, until)
}

// write sends a change and waits for it to be durable, until the deadline.
func (s *System) write(h *handle, r *Request, until int64) error {
	rep, ok := s.call(h, r, until)
	if !ok {
		return ErrNotDurable
	}
	return rep.err
}

// keyed runs a keyed change. Normally the actor decides from its table of
// recent keys. When that table has forgotten keys, the actor answers
// errKeyCheck for an unknown key; the store is asked (here, on the caller's
// goroutine, never inside an actor) and the change is replayed or re-sent
// as checked. No change with the key can reach the store in between: it
// would be pending in the actor's table, which never forgets pending keys.
func (s *System) keyed(user string, want KeyOutcome, until int64, write func(checked bool) error) error {
	err := write(false)
	if !errors.Is(err, errKeyCheck) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), remaining(until))
	got, found, err := s.cfg.Store.KeyApplied(ctx, user, want.Key)
	cancel()
	switch {
	case err != nil:
		slog.Warn("idempotency key lookup failed", "user", user, "err", err)
		return ErrUnavailable
	case found && got != want:
		return ErrKeyReused
	case found:
		return nil // applied before: replay its success
	}
	return write(true)
}

// Account is a user's credentials as seen by authentication.
type Account struct{ h *handle }

// PasswordHash returns the stored bcrypt hash. Immutable; do not modify.
func (a Account) PasswordHash() []byte { return a.h.hash }

// Digest returns the fast password digest remembered after a successful
// verification, or nil. It lives as long as the user is resident.
func (a Account) Digest() *[32]byte { return a.h.digest.Load() }

// SetDigest remembers a verified password's digest.
func (a Account) SetDigest(d *[32]byte) { a.h.digest.Store(d) }

// Lookup resolves a user (loading it if needed) for authentication.
func (s *System) Lookup(name string) (Account, error) {
	h, err := s.resolve(name, monotime()+int64(s.cfg.LoadTimeout))
	if err != nil {
		return Account{}, err
	}
	return Account{h: h}, nil
}

// Resident reports whether the user's actor is in memory (no loading).
func (s *System) Resident(name string) bool {
	h := s.dir.shard(name).get(name)
	return h != nil && h.isReady() && h.err == nil && !h.dead()
}

// registration waits for a Registered record's outcome.
type registration chan error

func (r registration) JournalDone(err error) { r <- err }

// Register creates a user with StartingCoins; nil means the user is durable.
// ErrUserExists means the name is taken (verify the password instead).
func (s *System) Register(name string, passwordHash []byte) error {
	sh := s.dir.shard(name)
	for range 4 {
		sh.mu.Lock()
		if h := sh.m[name]; h != nil && !h.dead() {
			sh.mu.Unlock()
			if _, err := s.resolve(name, monotime()+int64(s.cfg.LoadTimeout)); !errors.Is(err, ErrUnknownUser) {
				if err == nil {
					err = ErrUserExists
				}
				return err
			}
			continue // a concurrent load found nothing; try again
		}
		h := newHandle(s, name)
		sh.m[name] = h
		delete(sh.absent, name)
		sh.mu.Unlock()
		return s.register(sh, h, passwordHash)
	}
	return ErrUnavailable
}

func (s *System) register(sh *shard, h *handle, hash []byte) error {
	done := make(registration, 1)
	rec := Record{Kind: Registered, User: h.name, Amount: StartingCoins, PasswordHash: hash, Done: done}
	err := s.journal.Append(&rec)
	if err == nil {
		t := getTimer(s.cfg.WriteTimeout)
		select {
		case err = <-done:
		case <-t.C:
			err = ErrNotDurable
		}
		putTimer(t)
	}
	if err != nil {
		h.err = err
		sh.remove(h)
		close(h.ready)
		return err
	}
	h.hash = hash
	s.spawn(h, &user{h: h, sys: s, wallet: NewWallet()})
	return nil
}
