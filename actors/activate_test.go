package actors

import (
	"errors"
	"testing"
	"time"
)

// TestSingleFlightActivation: concurrent first requests for a stored user
// load it once and end with one actor.
func TestSingleFlightActivation(t *testing.T) {
	const n = 8
	e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob")
	gate := make(chan struct{})
	e.store.SetGate(gate)
	awaiting := goroutinesIn("merch/actors.(*System).await")
	calls := []<-chan error{async(func() error { _, err := e.sys.Info("alice"); return err })}
	Fakes.MustWait(t, e.store, "the first load", func() bool { return e.store.LoadCount("alice") == 1 })
	for i := 1; i < n; i++ {
		calls = append(calls, async(func() error {
			switch i % 4 {
			case 0:
				_, err := e.sys.Info("alice")
				return err
			case 1:
				return e.sys.Buy("alice", pen, "")
			case 2:
				_, err := e.sys.Lookup("alice")
				return err
			}
			return e.sys.Send("alice", "bob", 1, "")
		}))
	}
	// Every other caller is either parked on the first load or (if single
	// flight were broken) inside a load of its own.
	mustPoll(t, "callers parked on the first load", func() bool {
		parked := goroutinesIn("merch/actors.(*System).await") - awaiting
		return parked+e.store.LoadCount("alice")-1 >= n-1
	})
	close(gate)
	for _, c := range calls {
		if err := mustResult(t, c); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.store.LoadCount("alice"); got != 1 {
		t.Fatalf("LoadUser(alice) called %d times, want 1", got)
	}
	if got := e.metrics.activated.Load(); got != 2 {
		t.Fatalf("%d activations, want 2 (alice, bob)", got)
	}
	e.mustActive(t, 2)
}

// TestSlowLoad: callers waiting on another caller's load give up at their
// own deadline; the load itself completes and is used afterwards.
func TestSlowLoad(t *testing.T) {
	cfg := testConfig()
	cfg.ReadTimeout = shortTimeout
	e := mustNewEnv(t, cfg, liveJournal, "alice")
	gate := make(chan struct{})
	e.store.SetGate(gate)
	loader := async(func() error { _, err := e.sys.Info("alice"); return err })
	Fakes.MustWait(t, e.store, "the load", func() bool { return e.store.LoadCount("alice") == 1 })
	if _, err := e.sys.Info("alice"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Info waiting on a slow load = %v, want ErrUnavailable", err)
	}
	close(gate)
	// The loader's own deadline passed during the load: either answer is
	// right, as long as it is one of these.
	if err := mustResult(t, loader); err != nil && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("loader: %v", err)
	}
	if body, err := e.sys.Info("alice"); err != nil || string(body) != emptyInfo {
		t.Fatalf("Info after the load = %s, %v", body, err)
	}
	if got := e.store.LoadCount("alice"); got != 1 {
		t.Fatalf("LoadUser called %d times, want 1", got)
	}
}

// TestLoadFailures: a user whose state cannot be loaded is unavailable,
// not unknown and not empty; with AbsentTTL 0 nothing negative is cached.
func TestLoadFailures(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(s TestStore)
		wantErr error
	}{
		{"store error", func(s TestStore) { s.SetLoadErr("alice", errInjected) }, ErrUnavailable},
		{"broken invariant", func(s TestStore) {
			st := stateWith(1000)
			st.Coins = 1001
			s.Put("alice", st)
		}, ErrUnavailable},
		{"unknown", func(s TestStore) { s.Delete("alice") }, ErrUnknownUser},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob")
			tc.setup(e.store)
			if _, err := e.sys.Info("alice"); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Info = %v, want %v", err, tc.wantErr)
			}
			if err := e.sys.Buy("alice", pen, ""); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Buy = %v, want %v", err, tc.wantErr)
			}
			wantSend := tc.wantErr
			if errors.Is(wantSend, ErrUnknownUser) {
				wantSend = ErrUnknownRecipient
			}
			if err := e.sys.Send("bob", "alice", 1, ""); !errors.Is(err, wantSend) {
				t.Fatalf("Send to = %v, want %v", err, wantSend)
			}
			if _, err := e.sys.Lookup("alice"); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Lookup = %v, want %v", err, tc.wantErr)
			}
			if got := e.store.LoadCount("alice"); got != 4 {
				t.Fatalf("LoadUser called %d times, want once per request", got)
			}
			e.mustActive(t, 1) // bob
			e.store.SetLoadErr("alice", nil)
			e.store.Put("alice", UserState{Coins: 1000})
			if err := e.sys.Buy("alice", pen, ""); err != nil {
				t.Fatalf("Buy once the store works: %v", err)
			}
			e.mustSee(t, "alice", want{coins: 990, items: map[ItemID]int64{pen: 1}})
		})
	}
}

// TestFreshActorIsNotIdle: an actor counts as used when it is spawned, so a
// login or a registration (which pin nothing) does not make it look idle
// since the process started.
func TestFreshActorIsNotIdle(t *testing.T) {
	e := mustNewEnv(t, testConfig(), liveJournal, "alice")
	t0 := monotime()
	if _, err := e.sys.Lookup("alice"); err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Register("bob", []byte("h")); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		h := e.sys.dir.stripe(u).get(u)
		if h == nil {
			t.Fatalf("%s not resident", u)
		}
		if used := h.lastUsed.Load(); used < t0 {
			t.Fatalf("%s: last used at %v, before it was spawned at %v", u, time.Duration(used), time.Duration(t0))
		}
	}
	if n := e.sys.PassivateIdle(time.Hour); n != 2 {
		t.Fatalf("%d resident after passivating those idle for an hour, want 2", n)
	}
}
