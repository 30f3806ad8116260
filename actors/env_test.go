package actors

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthdm/hollywood/actor"
)

// shortTimeout is a write or read timeout that a test expects to expire
// (for a call that is held on purpose). The calls in the same test that must
// succeed are single round trips, which it leaves ample time for.
const shortTimeout = 500 * time.Millisecond

// errInjected is a journal failure made up by a test.
var errInjected = errors.New("injected journal failure")

// journalMode says how an env's journal completes records.
type journalMode int

const (
	liveJournal journalMode = iota // commits asynchronously in batches, like persist's
	heldJournal                    // keeps every record until the test completes it
)

// mustNewEnv starts a System whose store holds users (1000 coins each) over
// a journal in mode.
func mustNewEnv(tb testing.TB, cfg Config, mode journalMode, users ...string) *env {
	tb.Helper()
	store := Fakes.MustStore(tb, users...)
	if mode == heldJournal {
		return mustEnv(tb, cfg, store, Fakes.MustHeldJournal(tb, store))
	}
	return mustEnv(tb, cfg, store, Fakes.MustJournal(tb, store, 256))
}

// stateWith is a consistent stored state with the given balance; the
// difference to StartingCoins went to or came from "bank".
func stateWith(coins Coins) UserState {
	st := UserState{PasswordHash: []byte("hash"), Coins: coins}
	switch {
	case coins < StartingCoins:
		st.Sent = []Counterparty{{"bank", StartingCoins - coins}}
	case coins > StartingCoins:
		st.Received = []Counterparty{{"bank", coins - StartingCoins}}
	}
	return st
}

// want is a user's expected durable state.
type want struct {
	coins    Coins
	items    map[ItemID]int64
	received map[string]Coins
	sent     map[string]Coins
}

// mustSee checks that both the user's Info and the store show w.
func (e *env) mustSee(tb testing.TB, user string, w want) {
	tb.Helper()
	body, err := e.sys.Info(user)
	if err != nil {
		tb.Fatalf("Info(%s): %v", user, err)
	}
	wallet := Wallet{coins: w.coins, items: inv(w.items), received: linesOf(w.received), sent: linesOf(w.sent)}
	mustMatchWallet(tb, body, &wallet)
	st, ok := e.store.State(user)
	if !ok {
		tb.Fatalf("store has no %s", user)
	}
	if st.Coins != w.coins || st.Inventory != wallet.items ||
		!sameTotals(totalsMap(st.Received), w.received) || !sameTotals(totalsMap(st.Sent), w.sent) {
		tb.Fatalf("store has %s = %+v, want %+v", user, st, w)
	}
}

// mustQuiet checks that no message waits in any mailbox.
func (e *env) mustQuiet(tb testing.TB) {
	tb.Helper()
	if st := e.sys.Stats(); st.MailboxDepth != 0 || st.MailboxDepthMax != 0 {
		tb.Fatalf("mailboxes not empty: %+v", st)
	}
}

func (e *env) mustActive(tb testing.TB, n int64) {
	tb.Helper()
	if got := e.sys.Stats().Active; got != n {
		tb.Fatalf("%d active actors, want %d", got, n)
	}
}

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
