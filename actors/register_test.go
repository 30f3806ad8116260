package actors

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestRegister(t *testing.T) {
	t.Run("new user", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "bob")
		if err := e.sys.Register("alice", []byte("h1")); err != nil {
			t.Fatal(err)
		}
		e.mustActive(t, 1)
		e.mustSee(t, "alice", want{coins: 1000})
		if st, _ := e.store.State("alice"); string(st.PasswordHash) != "h1" {
			t.Fatalf("stored hash %q", st.PasswordHash)
		}
		acc, err := e.sys.Lookup("alice")
		if err != nil || string(acc.PasswordHash()) != "h1" {
			t.Fatalf("Lookup = %q, %v", acc.PasswordHash(), err)
		}
		if got := e.store.LoadCount("alice"); got != 0 {
			t.Fatalf("a registered user was loaded %d times", got)
		}
		// Usable at once, as sender and recipient.
		if err := e.sys.Send("alice", "bob", 10, ""); err != nil {
			t.Fatal(err)
		}
		if err := e.sys.Send("bob", "alice", 3, ""); err != nil {
			t.Fatal(err)
		}
		e.mustSee(t, "alice", want{coins: 993, sent: map[string]Coins{"bob": 10}, received: map[string]Coins{"bob": 3}})
	})
	t.Run("resident user exists", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "alice")
		if _, err := e.sys.Info("alice"); err != nil {
			t.Fatal(err)
		}
		if err := e.sys.Register("alice", []byte("other")); !errors.Is(err, ErrUserExists) {
			t.Fatalf("Register = %v, want ErrUserExists", err)
		}
		if appends, _ := e.journal.Counts(); appends != 0 {
			t.Fatalf("%d records appended for a resident user", appends)
		}
		e.mustSee(t, "alice", want{coins: 1000})
	})
	t.Run("stored user exists", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "alice")
		if err := e.sys.Buy("alice", cup, ""); err != nil {
			t.Fatal(err)
		}
		if n := e.sys.PassivateIdle(0); n != 0 {
			t.Fatalf("%d resident after passivation", n)
		}
		if err := e.sys.Register("alice", []byte("other")); !errors.Is(err, ErrUserExists) {
			t.Fatalf("Register = %v, want ErrUserExists", err)
		}
		e.mustActive(t, 0)
		e.mustSee(t, "alice", want{coins: 980, items: map[ItemID]int64{cup: 1}})
		if st, _ := e.store.State("alice"); string(st.PasswordHash) != "hash:alice" {
			t.Fatalf("hash overwritten: %q", st.PasswordHash)
		}
	})
	t.Run("journal refuses", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal)
		e.journal.SetRefuse(func(*Record) error { return ErrOverloaded })
		if err := e.sys.Register("alice", []byte("h")); !errors.Is(err, ErrOverloaded) {
			t.Fatalf("Register = %v", err)
		}
		e.mustActive(t, 0)
		if _, err := e.sys.Info("alice"); !errors.Is(err, ErrUnknownUser) {
			t.Fatalf("Info after a refused registration = %v", err)
		}
		e.journal.SetRefuse(nil)
		if err := e.sys.Register("alice", []byte("h")); err != nil {
			t.Fatalf("retry: %v", err)
		}
		e.mustSee(t, "alice", want{coins: 1000})
	})
	t.Run("record fails", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal)
		e.journal.SetFail(func(*Record) error { return errInjected })
		if err := e.sys.Register("alice", []byte("h")); !errors.Is(err, errInjected) {
			t.Fatalf("Register = %v", err)
		}
		e.journal.SetFail(nil)
		if _, err := e.sys.Info("alice"); !errors.Is(err, ErrUnknownUser) {
			t.Fatalf("Info after a failed registration = %v", err)
		}
		if err := e.sys.Register("alice", []byte("h")); err != nil {
			t.Fatalf("retry: %v", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		cfg := testConfig()
		cfg.WriteTimeout = 20 * time.Millisecond // the behaviour under test
		e := mustNewEnv(t, cfg, heldJournal)
		if err := e.sys.Register("alice", []byte("h")); !errors.Is(err, ErrNotDurable) {
			t.Fatalf("Register = %v, want ErrNotDurable", err)
		}
		e.journal.ReleaseAll(nil) // it commits after all
		e.mustSee(t, "alice", want{coins: 1000})
		if err := e.sys.Register("alice", []byte("h2")); !errors.Is(err, ErrUserExists) {
			t.Fatalf("Register after the late commit = %v", err)
		}
		if st, _ := e.store.State("alice"); string(st.PasswordHash) != "h" {
			t.Fatalf("stored hash %q", st.PasswordHash)
		}
	})
}

// TestRegisterConcurrent: many first logins for one new name create the user
// exactly once; the others learn that it exists.
func TestRegisterConcurrent(t *testing.T) {
	const n = 16
	t.Run("racing", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal)
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = e.sys.Register("alice", fmt.Appendf(nil, "h%d", i))
			})
		}
		close(start)
		wg.Wait()
		winner := mustOneWinner(t, errs)
		if st, _ := e.store.State("alice"); string(st.PasswordHash) != fmt.Sprintf("h%d", winner) {
			t.Fatalf("stored hash %q, winner %d", st.PasswordHash, winner)
		}
		if acc, err := e.sys.Lookup("alice"); err != nil || string(acc.PasswordHash()) != fmt.Sprintf("h%d", winner) {
			t.Fatalf("resident hash %q, %v; winner %d", acc.PasswordHash(), err, winner)
		}
		e.mustActive(t, 1)
	})
	t.Run("parked behind the first", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), heldJournal)
		errs := make([]error, n)
		first := async(func() error { return e.sys.Register("alice", []byte("h0")) })
		e.journal.MustWaitHeld(t, 1)
		awaiting := goroutinesIn("merch/actors.(*System).await")
		var wg sync.WaitGroup
		for i := 1; i < n; i++ {
			wg.Go(func() { errs[i] = e.sys.Register("alice", fmt.Appendf(nil, "h%d", i)) })
		}
		mustPoll(t, "registrations parked on the first", func() bool {
			return goroutinesIn("merch/actors.(*System).await")-awaiting >= n-1 || e.journal.HeldCount() > 1
		})
		if held := e.journal.HeldCount(); held != 1 {
			t.Fatalf("%d Registered records for one name", held)
		}
		e.journal.ReleaseAll(nil)
		errs[0] = mustResult(t, first)
		wg.Wait()
		if winner := mustOneWinner(t, errs); winner != 0 {
			t.Fatalf("winner %d, want the first", winner)
		}
		e.mustActive(t, 1)
	})
}

// mustOneWinner checks that exactly one error is nil and the rest are
// ErrUserExists; it returns the winner's index.
func mustOneWinner(tb testing.TB, errs []error) int {
	tb.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			tb.Fatalf("two registrations won: %d and %d", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, ErrUserExists):
			tb.Fatalf("registration %d: %v", i, err)
		}
	}
	if winner < 0 {
		tb.Fatal("no registration won")
	}
	return winner
}

// TestRegisterDuringLoad: a registration that finds a load of the same name
// in progress waits for it; when the name turns out unknown, it registers.
func TestRegisterDuringLoad(t *testing.T) {
	e := mustNewEnv(t, testConfig(), liveJournal)
	gate := make(chan struct{})
	e.store.SetGate(gate)
	awaiting := goroutinesIn("merch/actors.(*System).await")
	info := async(func() error { _, err := e.sys.Info("newbie"); return err })
	Fakes.MustWait(t, e.store, "the load", func() bool { return e.store.LoadCount("newbie") == 1 })
	register := async(func() error { return e.sys.Register("newbie", []byte("h")) })
	mustPoll(t, "the registration parked on the load", func() bool {
		return goroutinesIn("merch/actors.(*System).await") > awaiting
	})
	close(gate)
	if err := mustResult(t, info); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("Info = %v, want ErrUnknownUser", err)
	}
	if err := mustResult(t, register); err != nil {
		t.Fatalf("Register = %v", err)
	}
	e.mustSee(t, "newbie", want{coins: 1000})
}
