package actors

import (
	"errors"
	"testing"
	"time"
)

// TestUnknownRecipientCached: a name the store does not know is asked for
// once per absentTTL, not once per request, and registering it ends that at
// once.
func TestUnknownRecipientCached(t *testing.T) {
	cfg := testConfig()
	cfg.AbsentTTL = time.Hour
	e := mustNewEnv(t, cfg, liveJournal, "alice")
	for range 5 {
		if err := e.sys.Send("alice", "nobody", 1, ""); !errors.Is(err, ErrUnknownRecipient) {
			t.Fatalf("Send to nobody = %v", err)
		}
	}
	if n := e.store.LoadCount("nobody"); n != 1 {
		t.Fatalf("store asked %d times for an unknown recipient, want 1", n)
	}
	if err := e.sys.Register("nobody", []byte("hash")); err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Send("alice", "nobody", 1, ""); err != nil {
		t.Fatalf("Send after registration = %v", err)
	}
	e.mustQuiet(t)
}

// TestInflightLimit: above InflightPerUserMax a user's requests are shed
// with ErrOverloaded; other users are not affected.
func TestInflightLimit(t *testing.T) {
	cfg := testConfig()
	cfg.InflightPerUserMax = 2
	e := mustNewEnv(t, cfg, heldJournal, "alice", "bob")
	calls := []<-chan error{
		async(func() error { return e.sys.Buy("alice", pen, "") }),
		async(func() error { return e.sys.Buy("alice", pen, "") }),
	}
	e.journal.MustWaitHeld(t, 2)
	if err := e.sys.Buy("alice", pen, ""); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Buy over the limit = %v", err)
	}
	if _, err := e.sys.Info("alice"); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Info over the limit = %v", err)
	}
	if err := e.sys.Send("alice", "bob", 1, ""); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Send over the limit = %v", err)
	}
	if _, err := e.sys.Info("bob"); err != nil {
		t.Fatalf("another user: %v", err)
	}
	if held := e.journal.HeldCount(); held != 2 {
		t.Fatalf("%d records appended, want 2", held)
	}
	e.journal.ReleaseAll(nil)
	for _, c := range calls {
		if err := mustResult(t, c); err != nil {
			t.Fatal(err)
		}
	}
	e.journal.SetHold(false)
	if err := e.sys.Buy("alice", pen, ""); err != nil {
		t.Fatalf("Buy after the backlog cleared: %v", err)
	}
	e.mustSee(t, "alice", want{coins: 970, items: map[ItemID]int64{pen: 3}})
}

// TestHotReceiverNotLimited: credits pending for a recipient pin its actor
// but do not count against its own in-flight limit, so a hot receiver's
// own requests are not refused.
func TestHotReceiverNotLimited(t *testing.T) {
	cfg := testConfig()
	cfg.InflightPerUserMax = 2
	e := mustNewEnv(t, cfg, heldJournal, "alice", "bob", "carol")
	calls := []<-chan error{
		async(func() error { return e.sys.Send("alice", "bob", 5, "") }),
		async(func() error { return e.sys.Send("carol", "bob", 5, "") }),
	}
	e.journal.MustWaitHeld(t, 2)
	if _, err := e.sys.Info("bob"); err != nil {
		t.Fatalf("bob's Info with two credits pending: %v", err)
	}
	buy := async(func() error { return e.sys.Buy("bob", pen, "") })
	e.journal.MustWaitHeld(t, 3)
	e.journal.ReleaseAll(nil)
	for _, c := range append(calls, buy) {
		if err := mustResult(t, c); err != nil {
			t.Fatal(err)
		}
	}
	e.mustSee(t, "bob", want{coins: 1000 + 10 - 10, items: map[ItemID]int64{pen: 1},
		received: map[string]Coins{"alice": 5, "carol": 5}})
}
