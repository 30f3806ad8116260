package actors

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthdm/hollywood/actor"
)

// failAfter bounds every wait in these tests. It only turns a hang into a
// failure; nothing waits for it to pass.
const failAfter = 10 * time.Second

// notifier is a broadcast condition: a waiter takes changed() before it
// evaluates its condition, and the owner calls notify() after every change,
// so no wake-up is lost.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// mustWait blocks until cond holds; n must be notified after every change
// cond depends on. It fails tb after failAfter.
func mustWait(tb testing.TB, n *notifier, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(failAfter)
	defer deadline.Stop()
	for {
		ch := n.changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("timed out after %v waiting for %s", failAfter, what)
		}
	}
}

// mustPoll polls cond until it holds, for conditions nothing can signal (a
// goroutine parked inside the package). The ticker only paces the polling;
// the deadline bounds a failure.
func mustPoll(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(failAfter)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			tb.Fatalf("timed out after %v waiting for %s", failAfter, what)
		}
	}
}

// goroutinesIn counts goroutines whose stack contains fn (a qualified
// function name such as "merch/actors.(*System).await").
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn+"(") {
			count++
		}
	}
	return count
}

// storedUser is the fake store's row set for one user.
type storedUser struct {
	hash     []byte
	coins    Coins
	inv      [itemCount + 1]int64
	received map[string]Coins
	sent     map[string]Coins
	keys     []KeyedRequest
}

// fakeStore is an in-memory Store. The fake journals commit records to it
// the way persist commits them to PostgreSQL, so a user reloaded after
// passivation sees every committed change. Safe for concurrent use.
type fakeStore struct {
	mu         sync.Mutex
	users      map[string]*storedUser
	loads      map[string]int
	loadErr    map[string]error
	gate       chan struct{} // when not nil, LoadUser waits for it to close
	violations []string      // records the database would have refused
	keyChecks  int           // KeyApplied calls
	keyErr     error         // returned by KeyApplied when not nil
	changes    notifier      // notified after every LoadUser entry
}

// mustStore returns a store holding users, each with StartingCoins. It fails
// tb at cleanup if any committed record broke a database constraint.
func mustStore(tb testing.TB, users ...string) *fakeStore {
	tb.Helper()
	s := newFakeStore(users...)
	tb.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, v := range s.violations {
			tb.Errorf("store: constraint violated: %s", v)
		}
	})
	return s
}

// newFakeStore returns a store holding users, each with StartingCoins.
func newFakeStore(users ...string) *fakeStore {
	s := &fakeStore{users: make(map[string]*storedUser), loads: make(map[string]int),
		loadErr: make(map[string]error)}
	for _, u := range users {
		s.users[u] = &storedUser{hash: []byte("hash:" + u), coins: StartingCoins}
	}
	return s
}

// put stores st as name's durable state, as is (it may break invariants).
func (s *fakeStore) put(name string, st UserState) {
	u := &storedUser{hash: st.PasswordHash, coins: st.Coins, inv: st.Inventory,
		received: map[string]Coins{}, sent: map[string]Coins{}, keys: append([]KeyedRequest(nil), st.Keys...)}
	for _, c := range st.Received {
		u.received[c.User] += c.Amount
	}
	for _, c := range st.Sent {
		u.sent[c.User] += c.Amount
	}
	s.mu.Lock()
	s.users[name] = u
	s.mu.Unlock()
}

func (s *fakeStore) LoadUser(ctx context.Context, name string) (UserState, error) {
	s.mu.Lock()
	s.loads[name]++
	gate := s.gate
	s.mu.Unlock()
	s.changes.notify()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return UserState{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadErr[name]; err != nil {
		return UserState{}, err
	}
	u := s.users[name]
	if u == nil {
		return UserState{}, ErrUnknownUser
	}
	return u.state(), nil
}

// KeyApplied reports whether user committed a change under key.
func (s *fakeStore) KeyApplied(_ context.Context, user, key string) (KeyedRequest, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keyChecks++
	if err := s.keyErr; err != nil {
		return KeyedRequest{}, false, err
	}
	if u := s.users[user]; u != nil {
		for _, k := range u.keys {
			if k.Key == key {
				return k, true, nil
			}
		}
	}
	return KeyedRequest{}, false, nil
}

// state is what LoadUser returns: like persist, at most the KeysPerUserMax
// most recent keys.
func (u *storedUser) state() UserState {
	keys := u.keys[max(0, len(u.keys)-KeysPerUserMax):]
	return UserState{PasswordHash: u.hash, Coins: u.coins, Inventory: u.inv,
		Received: totals(u.received), Sent: totals(u.sent), Keys: append([]KeyedRequest(nil), keys...)}
}

func totals(m map[string]Coins) []Counterparty {
	out := make([]Counterparty, 0, len(m))
	for u, a := range m {
		out = append(out, Counterparty{User: u, Amount: a})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}

// state returns name's stored state; ok is false for an unknown user.
func (s *fakeStore) state(name string) (UserState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[name]
	if u == nil {
		return UserState{}, false
	}
	return u.state(), true
}

func (s *fakeStore) loadCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads[name]
}

// apply commits one record like persist's batch does. ErrUserExists is the
// outcome of a Registered record for a taken name; a record PostgreSQL would
// refuse (a CHECK or a missing row) is a test failure, recorded as a
// violation and completed with an error.
func (s *fakeStore) apply(rec *Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	bad := func(format string, args ...any) error {
		v := fmt.Sprintf("%s %+v: ", rec.Kind, *rec) + fmt.Sprintf(format, args...)
		s.violations = append(s.violations, v)
		return fmt.Errorf("fake store: %s", v)
	}
	u := s.users[rec.User]
	switch rec.Kind {
	case Registered:
		if u != nil {
			return ErrUserExists
		}
		if rec.Amount != StartingCoins {
			return bad("registered with %d coins", rec.Amount)
		}
		s.users[rec.User] = &storedUser{hash: rec.PasswordHash, coins: StartingCoins}
		return nil
	case Purchased:
		switch {
		case u == nil:
			return bad("unknown buyer")
		case !rec.Item.Valid() || rec.Amount != rec.Item.Price():
			return bad("bad item or price")
		case u.coins < rec.Amount:
			return bad("balance %d would go negative", u.coins)
		}
		u.coins -= rec.Amount
		u.inv[rec.Item]++
	case Transferred:
		peer := s.users[rec.Peer]
		switch {
		case u == nil || peer == nil:
			return bad("unknown sender or recipient")
		case rec.User == rec.Peer || rec.Amount <= 0:
			return bad("self transfer or bad amount")
		case u.coins < rec.Amount:
			return bad("balance %d would go negative", u.coins)
		}
		u.coins -= rec.Amount
		peer.coins += rec.Amount
		if u.sent == nil {
			u.sent = map[string]Coins{}
		}
		if peer.received == nil {
			peer.received = map[string]Coins{}
		}
		u.sent[rec.Peer] += rec.Amount
		peer.received[rec.User] += rec.Amount
	default:
		return bad("unknown kind")
	}
	if rec.Key != "" {
		u.keys = append(u.keys, KeyedRequest{Key: rec.Key, Kind: rec.Kind, Item: rec.Item, Peer: rec.Peer, Amount: rec.Amount})
	}
	return nil
}

// fakeJournal is a Journal the test controls. By default it works like
// persist's: a bounded queue (Append fails fast with ErrOverloaded when it is
// full) and one writer goroutine that takes everything queued as a batch,
// commits it to the store and completes the records in append order. With
// hold set, appended records wait in held until the test completes them.
type fakeJournal struct {
	store *fakeStore
	queue chan *Record
	stop  chan struct{}
	done  chan struct{}

	mu        sync.Mutex
	hold      bool
	held      []*Record
	appends   int
	completed int
	// refuse runs on the appending actor's goroutine, outside mu; a non-nil
	// result is returned by Append (the record is dropped), and it may panic.
	refuse func(rec *Record) error
	// fail decides a record's completion error when it is committed by the
	// writer; nil commits it to the store.
	fail    func(rec *Record) error
	changes notifier // notified after every append and completion
}

const fakeBatchMax = 64

// mustJournal returns a started journal with a queue of queueMax records; it
// is stopped at cleanup.
func mustJournal(tb testing.TB, store *fakeStore, queueMax int) *fakeJournal {
	tb.Helper()
	j := newFakeJournal(store, queueMax)
	go j.writer()
	tb.Cleanup(j.close)
	return j
}

// newFakeJournal returns a journal whose writer is not started: only held
// records complete, when the test says so.
func newFakeJournal(store *fakeStore, queueMax int) *fakeJournal {
	return &fakeJournal{store: store, queue: make(chan *Record, queueMax),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// mustHeldJournal returns a journal that holds every record until the test
// completes it.
func mustHeldJournal(tb testing.TB, store *fakeStore) *fakeJournal {
	tb.Helper()
	j := mustJournal(tb, store, 1)
	j.hold = true
	return j
}

func (j *fakeJournal) Append(rec *Record) error {
	j.mu.Lock()
	refuse, hold := j.refuse, j.hold
	j.mu.Unlock()
	if refuse != nil {
		if err := refuse(rec); err != nil {
			return err
		}
	}
	cp := *rec
	if hold {
		j.mu.Lock()
		j.held = append(j.held, &cp)
		j.appends++
		j.mu.Unlock()
		j.changes.notify()
		return nil
	}
	select {
	case j.queue <- &cp:
	default:
		return ErrOverloaded
	}
	j.mu.Lock()
	j.appends++
	j.mu.Unlock()
	j.changes.notify()
	return nil
}

func (j *fakeJournal) writer() {
	defer close(j.done)
	batch := make([]*Record, 0, fakeBatchMax)
	errs := make([]error, 0, fakeBatchMax)
	for {
		select {
		case <-j.stop:
			for {
				select {
				case rec := <-j.queue:
					j.finish(rec, ErrClosed)
				default:
					return
				}
			}
		case rec := <-j.queue:
			batch = append(batch[:0], rec)
		fill:
			for len(batch) < fakeBatchMax {
				select {
				case rec := <-j.queue:
					batch = append(batch, rec)
				default:
					break fill
				}
			}
			errs = errs[:0]
			for _, rec := range batch {
				errs = append(errs, j.commit(rec, nil))
			}
			for i, rec := range batch {
				j.finish(rec, errs[i])
			}
		}
	}
}

// commit decides a record's outcome: err (or the fail hook's) means it was
// not written; otherwise the store applies it.
func (j *fakeJournal) commit(rec *Record, err error) error {
	if err == nil {
		j.mu.Lock()
		fail := j.fail
		j.mu.Unlock()
		if fail != nil {
			err = fail(rec)
		}
	}
	if err != nil {
		return err
	}
	return j.store.apply(rec)
}

func (j *fakeJournal) finish(rec *Record, err error) {
	rec.Done.JournalDone(err)
	j.mu.Lock()
	j.completed++
	j.mu.Unlock()
	j.changes.notify()
}

func (j *fakeJournal) close() {
	close(j.stop)
	<-j.done
}

func (j *fakeJournal) setHold(hold bool) {
	j.mu.Lock()
	j.hold = hold
	j.mu.Unlock()
}

func (j *fakeJournal) setRefuse(fn func(rec *Record) error) {
	j.mu.Lock()
	j.refuse = fn
	j.mu.Unlock()
}

func (j *fakeJournal) setFail(fn func(rec *Record) error) {
	j.mu.Lock()
	j.fail = fn
	j.mu.Unlock()
}

// heldCount returns how many records wait for the test.
func (j *fakeJournal) heldCount() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.held)
}

func (j *fakeJournal) counts() (appends, completed int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.appends, j.completed
}

// mustWaitHeld waits until at least n records are held.
func (j *fakeJournal) mustWaitHeld(tb testing.TB, n int) {
	tb.Helper()
	mustWait(tb, &j.changes, fmt.Sprintf("%d held records", n), func() bool { return j.heldCount() >= n })
}

// take removes and returns the held record at index i.
func (j *fakeJournal) take(i int) *Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	rec := j.held[i]
	j.held = append(j.held[:i], j.held[i+1:]...)
	return rec
}

// completeHeld completes the held record at index i on the caller's
// goroutine (standing in for the writer): err == nil commits it to the
// store first.
func (j *fakeJournal) completeHeld(i int, err error) *Record {
	rec := j.take(i)
	j.finish(rec, j.commit(rec, err))
	return rec
}

// releaseAll completes every held record in append order with err.
func (j *fakeJournal) releaseAll(err error) {
	for j.heldCount() > 0 {
		j.completeHeld(0, err)
	}
}

// fakeMetrics counts observations. Safe for concurrent use.
type fakeMetrics struct {
	activated  atomic.Int64
	passivated atomic.Int64
	processed  [kindCount]atomic.Int64
	waits      atomic.Int64
	changes    notifier // notified after every observation
}

func (m *fakeMetrics) MailboxWait(d time.Duration) {
	if d < 0 {
		panic("negative mailbox wait")
	}
	m.waits.Add(1)
}

func (m *fakeMetrics) Processed(k MessageKind, d time.Duration) {
	if d < 0 {
		panic("negative processing time")
	}
	m.processed[k].Add(1)
	m.changes.notify()
}

// mustWaitProcessed waits until the counts of processed messages by kind
// reach want, then checks they did not pass it.
func (m *fakeMetrics) mustWaitProcessed(tb testing.TB, want [kindCount]int64) {
	tb.Helper()
	mustWait(tb, &m.changes, fmt.Sprintf("processed %v", want), func() bool {
		for k := range want {
			if m.processed[k].Load() < want[k] {
				return false
			}
		}
		return true
	})
	for k := range want {
		if got := m.processed[k].Load(); got != want[k] {
			tb.Errorf("processed %s = %d, want %d", MessageKind(k), got, want[k])
		}
	}
}

func (m *fakeMetrics) Activated() {
	m.activated.Add(1)
	m.changes.notify()
}

func (m *fakeMetrics) Passivated() {
	m.passivated.Add(1)
	m.changes.notify()
}

// env is one System over a real hollywood engine with fakes around it.
type env struct {
	engine  *actor.Engine
	store   *fakeStore
	journal *fakeJournal
	metrics *fakeMetrics
	sys     *System
}

// testConfig is the Config the tests start from: long timeouts (they only
// bound failures) and a janitor that never runs on its own.
func testConfig() Config {
	return Config{
		InboxSize: 4, InflightPerUserMax: 64,
		IdleTTL: time.Hour, SweepInterval: time.Hour,
		LoadTimeout: failAfter, WriteTimeout: failAfter, ReadTimeout: failAfter,
	}
}

// mustEngine returns a new hollywood engine.
func mustEngine(tb testing.TB) *actor.Engine {
	tb.Helper()
	e, err := newEngine()
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func newEngine() (*actor.Engine, error) { return actor.NewEngine(actor.NewEngineConfig()) }

// mustEnv starts a System over store and journal with cfg (its Engine,
// Journal, Store and Metrics are filled in). The System is closed at
// cleanup.
func mustEnv(tb testing.TB, cfg Config, store *fakeStore, journal *fakeJournal) *env {
	tb.Helper()
	e := &env{engine: mustEngine(tb), store: store, journal: journal, metrics: &fakeMetrics{}}
	cfg.Engine, cfg.Journal, cfg.Store, cfg.Metrics = e.engine, journal, store, e.metrics
	sys, err := NewSystem(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(sys.Close)
	e.sys = sys
	return e
}

// infoBody is /api/info decoded.
type infoBody struct {
	Coins     Coins `json:"coins"`
	Inventory []struct {
		Type     string `json:"type"`
		Quantity int64  `json:"quantity"`
	} `json:"inventory"`
	CoinHistory struct {
		Received []historyIn  `json:"received"`
		Sent     []historyOut `json:"sent"`
	} `json:"coinHistory"`
}

type historyIn struct {
	FromUser string `json:"fromUser"`
	Amount   Coins  `json:"amount"`
}

type historyOut struct {
	ToUser string `json:"toUser"`
	Amount Coins  `json:"amount"`
}

// async runs fn on a new goroutine and delivers its error.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

// mustResult waits for an async call's outcome.
func mustResult(tb testing.TB, ch <-chan error) error {
	tb.Helper()
	t := time.NewTimer(failAfter)
	defer t.Stop()
	select {
	case err := <-ch:
		return err
	case <-t.C:
		tb.Fatalf("call did not return within %v", failAfter)
		return nil
	}
}

// mustClosed waits until ch is closed.
func mustClosed(tb testing.TB, ch <-chan struct{}, what string) {
	tb.Helper()
	t := time.NewTimer(failAfter)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		tb.Fatalf("timed out after %v waiting for %s", failAfter, what)
	}
}

// mustPending asserts that an async call has not returned yet. It is only
// meaningful once the call is known to be parked (e.g. its record is held).
func mustPending(tb testing.TB, ch <-chan error) {
	tb.Helper()
	select {
	case err := <-ch:
		tb.Fatalf("call returned early: %v", err)
	default:
	}
}

// eventProbe marks a point in the engine's event stream.
type eventProbe struct{ n int }

// eventLog collects engine events of interest: actor restarts (our actors
// must never be restarted by hollywood) and dead letters (messages sent to a
// stopped actor, i.e. lost).
type eventLog struct {
	engine *actor.Engine
	mu     sync.Mutex
	events []any
	probes int
	seen   notifier
}

// mustEventLog subscribes to e's event stream and waits until the
// subscription is live.
func mustEventLog(tb testing.TB, e *actor.Engine) *eventLog {
	tb.Helper()
	l := &eventLog{engine: e}
	pid := e.SpawnFunc(func(c *actor.Context) {
		switch m := c.Message().(type) {
		case eventProbe:
			l.mu.Lock()
			l.probes = max(l.probes, m.n)
			l.mu.Unlock()
			l.seen.notify()
		case actor.ActorRestartedEvent, actor.ActorMaxRestartsExceededEvent:
			l.add(m)
		case actor.DeadLetterEvent:
			if _, ok := m.Message.(*request); ok {
				l.add(m)
			}
		}
	}, "events")
	e.Subscribe(pid)
	l.mustSync(tb)
	return l
}

func (l *eventLog) add(ev any) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
}

// mustSync waits until every event broadcast before it has been seen.
func (l *eventLog) mustSync(tb testing.TB) {
	tb.Helper()
	l.mu.Lock()
	n := l.probes + 1
	l.mu.Unlock()
	l.engine.BroadcastEvent(eventProbe{n: n})
	mustWait(tb, &l.seen, "event probe", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.probes >= n
	})
}

// mustNone fails tb if a restart or a lost request was seen.
func (l *eventLog) mustNone(tb testing.TB) {
	tb.Helper()
	l.mustSync(tb)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.events {
		tb.Errorf("unexpected engine event %T: %+v", ev, ev)
	}
}
