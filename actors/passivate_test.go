package actors

import (
	"strings"
	"testing"
	"time"
)

func TestPassivation(t *testing.T) {
	e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob")
	events := mustEventLog(t, e.engine)
	if err := e.sys.Buy("alice", book, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Send("alice", "bob", 50, ""); err != nil {
		t.Fatal(err)
	}
	e.mustActive(t, 2)
	if n := e.sys.PassivateIdle(time.Hour); n != 2 {
		t.Fatalf("recently used actors passivated: %d left", n)
	}
	if !e.sys.Resident("alice") || e.sys.Resident("carol") {
		t.Fatal("Resident: alice should be, carol should not")
	}
	old := e.sys.dir.stripe("alice").get("alice")
	if n := e.sys.PassivateIdle(0); n != 0 {
		t.Fatalf("%d actors left after passivating all idle ones", n)
	}
	e.mustActive(t, 0)
	if e.sys.Resident("alice") {
		t.Fatal("Resident after passivation")
	}
	if got := e.metrics.passivated.Load(); got != 2 {
		t.Fatalf("%d passivations observed, want 2", got)
	}
	if !old.dead() || e.sys.dir.stripe("alice").get("alice") != nil {
		t.Fatal("passivated handle still live or in the directory")
	}
	id := strings.TrimPrefix(old.pid.ID, "u/")
	mustPoll(t, "the passivated actor to stop", func() bool { return e.engine.Registry.GetPID("u", id) == nil })
	// The next request reloads from the store, which holds every commit.
	e.mustSee(t, "alice", want{coins: 900, items: map[ItemID]int64{book: 1}, sent: map[string]Coins{"bob": 50}})
	e.mustSee(t, "bob", want{coins: 1050, received: map[string]Coins{"alice": 50}})
	for _, u := range []string{"alice", "bob"} {
		if got := e.store.LoadCount(u); got != 2 {
			t.Fatalf("LoadUser(%s) called %d times, want 2", u, got)
		}
	}
	if fresh := e.sys.dir.stripe("alice").get("alice"); fresh == old || fresh.pid.ID == old.pid.ID {
		t.Fatal("reactivation reused the passivated actor")
	}
	e.mustActive(t, 2)
	if err := e.sys.Send("bob", "alice", 25, ""); err != nil {
		t.Fatal(err)
	}
	e.mustSee(t, "alice", want{coins: 925, items: map[ItemID]int64{book: 1},
		sent: map[string]Coins{"bob": 50}, received: map[string]Coins{"bob": 25}})
	events.mustNone(t)
}

// TestNoPassivationWhilePinned: an actor that is owed a journal outcome or a
// credit is never passivated, however idle it looks.
func TestNoPassivationWhilePinned(t *testing.T) {
	cfg := testConfig()
	cfg.IdleTTL = time.Nanosecond
	cfg.SweepInterval = time.Millisecond // the janitor sweeps all along
	e := mustNewEnv(t, cfg, heldJournal, "alice", "bob", "carol")
	events := mustEventLog(t, e.engine)
	buy := async(func() error { return e.sys.Buy("alice", cup, "") })
	send := async(func() error { return e.sys.Send("carol", "bob", 7, "") })
	e.journal.MustWaitHeld(t, 2)
	for range 3 {
		if n := e.sys.PassivateIdle(0); n != 3 {
			t.Fatalf("%d resident while three are pinned", n)
		}
	}
	e.journal.ReleaseAll(nil)
	for _, c := range []<-chan error{buy, send} {
		if err := mustResult(t, c); err != nil {
			t.Fatal(err)
		}
	}
	// Once answered, nothing is pinned: the janitor passivates all three.
	Fakes.MustWait(t, e.metrics.changes, "the janitor to passivate all", func() bool {
		return e.sys.Stats().Active == 0
	})
	e.mustActive(t, 0)
	e.journal.SetHold(false)
	e.mustSee(t, "alice", want{coins: 980, items: map[ItemID]int64{cup: 1}})
	e.mustSee(t, "bob", want{coins: 1007, received: map[string]Coins{"carol": 7}})
	e.mustSee(t, "carol", want{coins: 993, sent: map[string]Coins{"bob": 7}})
	events.mustNone(t)
}
