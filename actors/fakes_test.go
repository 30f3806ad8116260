package actors

import (
	"fmt"
	"runtime"
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

// The shared fakes are package actorstest's, which imports actors, so
// these internal tests cannot import it. The cycle is broken like an
// export_test.go, the other way round: this file declares, as exported
// interfaces and one struct of constructors (Fakes), exactly what the
// internal tests use of actorstest, and bridge_test.go, an external test
// file of this directory (package actors_test, in the same test binary),
// fills Fakes in its init from actorstest. go test builds actorstest
// against this package's test variant, so the types are the same ones, and
// package actors_test's init runs before any test. Nothing is copied: a
// control is one method in actorstest and its line here.

// Changes is anything that announces its changes (Store, Journal,
// Notifier). It is an alias of the literal MustWait takes, so
// actorstest.MustWait is assignable to Fakes.MustWait as it is.
type Changes = interface{ Changed() <-chan struct{} }

// Notifier is actorstest.Notifier: a broadcast condition.
type Notifier interface {
	Changes
	Notify()
}

// TestStore is actorstest.Store: an honest in-memory Store (see its doc).
type TestStore interface {
	Store
	Changes // at every LoadUser entry and Apply
	Put(name string, st UserState)
	Delete(name string)
	State(name string) (UserState, bool)
	Apply(rec *Record) error
	LoadCount(name string) int
	KeyChecks() int
	SetLoadErr(name string, err error)
	SetKeyErr(err error)
	SetGate(gate <-chan struct{})
	Violations() []string
}

// TestJournal is actorstest.Journal: persist's contract over a TestStore,
// with records held, refused or failed on demand.
type TestJournal interface {
	Journal
	Changes // at every append and completion
	SetHold(hold bool)
	SetRefuse(fn func(rec *Record) error)
	SetFail(fn func(rec *Record) error)
	HeldCount() int
	Counts() (appends, completed int)
	MustWaitHeld(tb testing.TB, n int)
	Take(i int) *Record
	CompleteHeld(i int, err error) *Record
	ReleaseAll(err error)
}

// Fakes holds actorstest's constructors and helpers of the same names;
// bridge_test.go sets every field.
var Fakes struct {
	NewStore        func(users ...string) TestStore
	MustStore       func(tb testing.TB, users ...string) TestStore
	NewJournal      func(store TestStore, queueMax int) TestJournal
	MustJournal     func(tb testing.TB, store TestStore, queueMax int) TestJournal
	MustHeldJournal func(tb testing.TB, store TestStore) TestJournal
	NewSyncJournal  func(store TestStore) TestJournal
	NewNotifier     func() Notifier
	MustWait        func(tb testing.TB, c Changes, what string, cond func() bool)
	// InfoState is actorstest.DecodeInfo (strict) followed by Info.State.
	InfoState func(body []byte) (UserState, error)
}

// fakeMetrics counts observations. Safe for concurrent use.
type fakeMetrics struct {
	activated  atomic.Int64
	passivated atomic.Int64
	processed  [kindCount]atomic.Int64
	waits      atomic.Int64
	changes    Notifier // notified after every observation
}

func newFakeMetrics() *fakeMetrics { return &fakeMetrics{changes: Fakes.NewNotifier()} }

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
	m.changes.Notify()
}

// mustWaitProcessed waits until the counts of processed messages by kind
// reach want, then checks they did not pass it.
func (m *fakeMetrics) mustWaitProcessed(tb testing.TB, want [kindCount]int64) {
	tb.Helper()
	Fakes.MustWait(tb, m.changes, fmt.Sprintf("processed %v", want), func() bool {
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
	m.changes.Notify()
}

func (m *fakeMetrics) Passivated() {
	m.passivated.Add(1)
	m.changes.Notify()
}

// env is one System over a real hollywood engine with fakes around it.
type env struct {
	engine  *actor.Engine
	store   TestStore
	journal TestJournal
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
func mustEnv(tb testing.TB, cfg Config, store TestStore, journal TestJournal) *env {
	tb.Helper()
	e := &env{engine: mustEngine(tb), store: store, journal: journal, metrics: newFakeMetrics()}
	cfg.Engine, cfg.Journal, cfg.Store, cfg.Metrics = e.engine, journal, store, e.metrics
	sys, err := NewSystem(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(sys.Close)
	e.sys = sys
	return e
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
	seen   Notifier
}

// mustEventLog subscribes to e's event stream and waits until the
// subscription is live.
func mustEventLog(tb testing.TB, e *actor.Engine) *eventLog {
	tb.Helper()
	l := &eventLog{engine: e, seen: Fakes.NewNotifier()}
	pid := e.SpawnFunc(func(c *actor.Context) {
		switch m := c.Message().(type) {
		case eventProbe:
			l.mu.Lock()
			l.probes = max(l.probes, m.n)
			l.mu.Unlock()
			l.seen.Notify()
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
	Fakes.MustWait(tb, l.seen, "event probe", func() bool {
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
