package actors

import (
	"errors"
	"fmt"
	"testing"
)

func TestIdempotency(t *testing.T) {
	t.Run("same key twice applies once", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob")
		for range 3 {
			if err := e.sys.Buy("alice", cup, "b1"); err != nil {
				t.Fatal(err)
			}
			if err := e.sys.Send("alice", "bob", 100, "s1"); err != nil {
				t.Fatal(err)
			}
		}
		if appends, _ := e.journal.Counts(); appends != 2 {
			t.Fatalf("%d records for two keyed changes", appends)
		}
		if got := e.metrics.replayed.Load(); got != 4 {
			t.Fatalf("%d replays counted, want 4", got)
		}
		e.mustSee(t, "alice", want{coins: 880, items: map[ItemID]int64{cup: 1}, sent: map[string]Coins{"bob": 100}})
		e.mustSee(t, "bob", want{coins: 1100, received: map[string]Coins{"alice": 100}})
		// The key is the sender's: the same key at another user is new.
		if err := e.sys.Buy("bob", cup, "b1"); err != nil {
			t.Fatal(err)
		}
		e.mustSee(t, "bob", want{coins: 1080, items: map[ItemID]int64{cup: 1}, received: map[string]Coins{"alice": 100}})
	})
	t.Run("same key, different request", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob", "carol")
		if err := e.sys.Buy("alice", cup, "b1"); err != nil {
			t.Fatal(err)
		}
		if err := e.sys.Send("alice", "bob", 100, "s1"); err != nil {
			t.Fatal(err)
		}
		reuses := []struct {
			name string
			call func() error
		}{
			{"other item", func() error { return e.sys.Buy("alice", book, "b1") }},
			{"buy key on a send", func() error { return e.sys.Send("alice", "bob", 20, "b1") }},
			{"send key on a buy", func() error { return e.sys.Buy("alice", cup, "s1") }},
			{"other amount", func() error { return e.sys.Send("alice", "bob", 101, "s1") }},
			{"other recipient", func() error { return e.sys.Send("alice", "carol", 100, "s1") }},
		}
		for _, r := range reuses {
			if err := r.call(); !errors.Is(err, ErrKeyReused) {
				t.Errorf("%s: %v, want ErrKeyReused", r.name, err)
			}
		}
		if appends, _ := e.journal.Counts(); appends != 2 {
			t.Fatalf("%d records appended", appends)
		}
		e.mustSee(t, "alice", want{coins: 880, items: map[ItemID]int64{cup: 1}, sent: map[string]Coins{"bob": 100}})
		e.mustSee(t, "carol", want{coins: 1000})
	})
	t.Run("duplicate while pending", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), heldJournal, "alice", "bob")
		buy := async(func() error { return e.sys.Buy("alice", cup, "b1") })
		send := async(func() error { return e.sys.Send("alice", "bob", 5, "s1") })
		e.journal.MustWaitHeld(t, 2)
		if err := e.sys.Buy("alice", cup, "b1"); !errors.Is(err, ErrKeyInFlight) {
			t.Fatalf("duplicate buy = %v, want ErrKeyInFlight", err)
		}
		if err := e.sys.Send("alice", "bob", 5, "s1"); !errors.Is(err, ErrKeyInFlight) {
			t.Fatalf("duplicate send = %v, want ErrKeyInFlight", err)
		}
		if err := e.sys.Buy("alice", pen, "b1"); !errors.Is(err, ErrKeyReused) {
			t.Fatalf("different request = %v, want ErrKeyReused", err)
		}
		e.journal.ReleaseAll(nil)
		for _, c := range []<-chan error{buy, send} {
			if err := mustResult(t, c); err != nil {
				t.Fatal(err)
			}
		}
		e.journal.SetHold(false)
		if err := e.sys.Buy("alice", cup, "b1"); err != nil {
			t.Fatalf("after commit: %v", err)
		}
		if appends, _ := e.journal.Counts(); appends != 2 {
			t.Fatalf("%d records appended", appends)
		}
		e.mustSee(t, "alice", want{coins: 975, items: map[ItemID]int64{cup: 1}, sent: map[string]Coins{"bob": 5}})
	})
	t.Run("refused append forgets the key", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob")
		e.journal.SetRefuse(func(*Record) error { return ErrOverloaded })
		if err := e.sys.Buy("alice", cup, "b1"); !errors.Is(err, ErrOverloaded) {
			t.Fatal(err)
		}
		if err := e.sys.Send("alice", "bob", 5, "s1"); !errors.Is(err, ErrOverloaded) {
			t.Fatal(err)
		}
		e.journal.SetRefuse(nil)
		e.mustRetryForgotten(t)
	})
	t.Run("failed record forgets the key", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), heldJournal, "alice", "bob")
		buy := async(func() error { return e.sys.Buy("alice", cup, "b1") })
		e.journal.MustWaitHeld(t, 1)
		send := async(func() error { return e.sys.Send("alice", "bob", 5, "s1") })
		e.journal.MustWaitHeld(t, 2)
		e.journal.ReleaseAll(ErrClosed)
		for _, c := range []<-chan error{buy, send} {
			if err := mustResult(t, c); !errors.Is(err, ErrClosed) {
				t.Fatalf("outcome %v, want ErrClosed", err)
			}
		}
		e.journal.SetHold(false)
		e.mustRetryForgotten(t)
	})
	t.Run("stored keys are honoured", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "bob", "carol")
		st := stateWith(1000 - 20 - 40)
		st.Sent, st.Inventory = []Counterparty{{"bob", 40}}, inv(map[ItemID]int64{cup: 1})
		st.Keys = []KeyedRequest{
			{Key: "b1", Kind: Purchased, Item: cup, Amount: 20},
			{Key: "s1", Kind: Transferred, Peer: "bob", Amount: 40},
		}
		e.store.Put("alice", st)
		if err := e.sys.Buy("alice", cup, "b1"); err != nil {
			t.Fatalf("replayed buy: %v", err)
		}
		if err := e.sys.Send("alice", "bob", 40, "s1"); err != nil {
			t.Fatalf("replayed send: %v", err)
		}
		if err := e.sys.Buy("alice", pen, "b1"); !errors.Is(err, ErrKeyReused) {
			t.Fatalf("reused buy key = %v", err)
		}
		if err := e.sys.Send("alice", "carol", 40, "s1"); !errors.Is(err, ErrKeyReused) {
			t.Fatalf("reused send key = %v", err)
		}
		if appends, _ := e.journal.Counts(); appends != 0 {
			t.Fatalf("replays appended %d records", appends)
		}
		e.mustSee(t, "alice", want{coins: 940, items: map[ItemID]int64{cup: 1}, sent: map[string]Coins{"bob": 40}})
	})
	t.Run("keys survive passivation", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob")
		if err := e.sys.Buy("alice", cup, "b1"); err != nil {
			t.Fatal(err)
		}
		if err := e.sys.Send("alice", "bob", 5, "s1"); err != nil {
			t.Fatal(err)
		}
		if n := e.sys.PassivateIdle(0); n != 0 {
			t.Fatalf("%d resident", n)
		}
		if err := e.sys.Buy("alice", cup, "b1"); err != nil {
			t.Fatal(err)
		}
		if err := e.sys.Send("alice", "bob", 5, "s1"); err != nil {
			t.Fatal(err)
		}
		if err := e.sys.Send("alice", "bob", 6, "s1"); !errors.Is(err, ErrKeyReused) {
			t.Fatalf("reused key after reload = %v", err)
		}
		if appends, _ := e.journal.Counts(); appends != 2 {
			t.Fatalf("%d records appended", appends)
		}
		e.mustSee(t, "alice", want{coins: 975, items: map[ItemID]int64{cup: 1}, sent: map[string]Coins{"bob": 5}})
	})
	t.Run("refusal replays", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "bob")
		e.store.Put("alice", stateWith(10))
		if err := e.sys.Buy("alice", cup, "b1"); !errors.Is(err, ErrInsufficientCoins) {
			t.Fatalf("Buy = %v", err)
		}
		if err := e.sys.Send("alice", "bob", 11, "s1"); !errors.Is(err, ErrInsufficientCoins) {
			t.Fatalf("Send = %v", err)
		}
		if err := e.sys.Send("bob", "alice", 100, ""); err != nil {
			t.Fatal(err)
		}
		// Now affordable, but the keys already have their answer.
		if err := e.sys.Buy("alice", cup, "b1"); !errors.Is(err, ErrInsufficientCoins) {
			t.Fatalf("replayed buy = %v, want the refusal", err)
		}
		if err := e.sys.Send("alice", "bob", 11, "s1"); !errors.Is(err, ErrInsufficientCoins) {
			t.Fatalf("replayed send = %v, want the refusal", err)
		}
		if err := e.sys.Buy("alice", book, "b1"); !errors.Is(err, ErrKeyReused) {
			t.Fatalf("reused refused key = %v", err)
		}
		if err := e.sys.Buy("alice", cup, "b2"); err != nil {
			t.Fatalf("new key: %v", err)
		}
		e.mustSee(t, "alice", want{coins: 90, items: map[ItemID]int64{cup: 1},
			sent: map[string]Coins{"bank": 990}, received: map[string]Coins{"bob": 100}})
		// Refusals live in memory only: after a reload the key is evaluated
		// afresh, which is safe because the refusal changed nothing.
		if n := e.sys.PassivateIdle(0); n != 0 {
			t.Fatalf("%d resident", n)
		}
		if err := e.sys.Buy("alice", cup, "b1"); err != nil {
			t.Fatalf("refused key after reload: %v", err)
		}
	})
}

// mustRetryForgotten retries alice's cup under b1 and 5 coins to bob under
// s1, whose first attempts did not apply, and checks both apply once.
func (e *env) mustRetryForgotten(tb testing.TB) {
	tb.Helper()
	if err := e.sys.Buy("alice", cup, "b1"); err != nil {
		tb.Fatalf("retry: %v", err)
	}
	if err := e.sys.Send("alice", "bob", 5, "s1"); err != nil {
		tb.Fatalf("retry: %v", err)
	}
	e.mustSee(tb, "alice", want{coins: 975, items: map[ItemID]int64{cup: 1}, sent: map[string]Coins{"bob": 5}})
}

// TestIdempotencyBeyondMemory: once a user's key table has forgotten keys
// (it overflowed, or the store returned only the most recent), a key missing
// from memory is looked up in the store before the change is treated as new.
func TestIdempotencyBeyondMemory(t *testing.T) {
	keyed := func(i int) KeyedRequest {
		return KeyedRequest{Key: fmt.Sprintf("old%d", i), Kind: Transferred, Peer: "bob", Amount: 1}
	}
	t.Run("loaded", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "bob")
		st := stateWith(1000)
		for i := range KeysPerUserMax + 1 {
			st.Keys = append(st.Keys, keyed(i))
		}
		e.store.Put("alice", st)
		// old1 is in memory: no store lookup.
		if err := e.sys.Send("alice", "bob", 1, "old1"); err != nil {
			t.Fatalf("recent key: %v", err)
		}
		if e.store.KeyChecks() != 0 {
			t.Fatalf("%d store lookups for a key in memory", e.store.KeyChecks())
		}
		// old0 was not loaded: the store has it.
		if err := e.sys.Send("alice", "bob", 1, "old0"); err != nil {
			t.Fatalf("key only in the store: %v", err)
		}
		if err := e.sys.Send("alice", "bob", 2, "old0"); !errors.Is(err, ErrKeyReused) {
			t.Fatalf("reused key only in the store = %v", err)
		}
		if err := e.sys.Buy("alice", cup, "old0"); !errors.Is(err, ErrKeyReused) {
			t.Fatalf("reused key only in the store = %v", err)
		}
		if appends, _ := e.journal.Counts(); appends != 0 {
			t.Fatalf("replays appended %d records", appends)
		}
		// A key nobody used is checked, then applied once.
		if err := e.sys.Buy("alice", cup, "new"); err != nil {
			t.Fatalf("new key: %v", err)
		}
		checks := e.store.KeyChecks()
		if err := e.sys.Buy("alice", cup, "new"); err != nil {
			t.Fatalf("replayed new key: %v", err)
		}
		if e.store.KeyChecks() != checks {
			t.Fatal("a key applied in memory was looked up in the store")
		}
		e.mustSee(t, "alice", want{coins: 980, items: map[ItemID]int64{cup: 1}})
		// The store failing: unavailable, nothing changed.
		e.store.SetKeyErr(errInjected)
		if err := e.sys.Buy("alice", cup, "other"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Buy while the key lookup fails = %v", err)
		}
		e.mustSee(t, "alice", want{coins: 980, items: map[ItemID]int64{cup: 1}})
	})
	t.Run("overflowed", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "bob")
		e.store.Put("alice", stateWith(2000))
		for i := range KeysPerUserMax + 1 {
			if err := e.sys.Send("alice", "bob", 1, fmt.Sprintf("k%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		if e.store.KeyChecks() != 0 {
			t.Fatalf("%d store lookups before anything was forgotten", e.store.KeyChecks())
		}
		if err := e.sys.Send("alice", "bob", 1, "k0"); err != nil {
			t.Fatalf("forgotten key: %v", err)
		}
		if e.store.KeyChecks() != 1 {
			t.Fatalf("%d store lookups, want 1", e.store.KeyChecks())
		}
		if err := e.sys.Send("alice", "bob", 1, "k1000"); err != nil {
			t.Fatalf("remembered key: %v", err)
		}
		n := Coins(KeysPerUserMax + 1)
		e.mustSee(t, "alice", want{coins: 2000 - n, sent: map[string]Coins{"bob": n}, received: map[string]Coins{"bank": 1000}})
	})
}

// TestKeyTableBounded: the oldest settled key is forgotten first, a pending
// one never.
func TestKeyTableBounded(t *testing.T) {
	var kt keyTable
	pendingKey := KeyedRequest{Key: "pending", Kind: Purchased, Item: cup, Amount: 20}
	kt.add(pendingKey, true, nil)
	for i := range KeysPerUserMax + 10 {
		kt.add(KeyedRequest{Key: fmt.Sprint(i), Kind: Purchased, Item: pen, Amount: 10}, false, nil)
	}
	if _, ok := kt.m["pending"]; !ok {
		t.Fatal("a pending key was evicted")
	}
	kt.finish("pending", true)
	kt.add(KeyedRequest{Key: "last", Kind: Purchased, Item: pen, Amount: 10}, false, nil)
	if len(kt.m) != KeysPerUserMax || len(kt.order) != KeysPerUserMax {
		t.Fatalf("%d keys, %d in order; want %d", len(kt.m), len(kt.order), KeysPerUserMax)
	}
	for _, k := range []string{"pending", "0", "10"} {
		if _, ok := kt.m[k]; ok {
			t.Errorf("old key %q kept", k)
		}
	}
	for _, k := range []string{"11", "last"} {
		if _, ok := kt.m[k]; !ok {
			t.Errorf("recent key %q forgotten", k)
		}
	}
	kt.finish("11", false)
	if _, ok := kt.m["11"]; ok || len(kt.order) != KeysPerUserMax-1 {
		t.Fatalf("a key that did not apply is still remembered")
	}
	kt.finish("unknown", false) // no-op
}
