package actors

import (
	"errors"
	"testing"
)

// TestWriteTimeout: a change not confirmed within WriteTimeout answers
// ErrNotDurable (outcome unknown); when the record commits later it is
// applied exactly once and its pins are released.
func TestWriteTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.WriteTimeout = shortTimeout
	e := mustNewEnv(t, cfg, heldJournal, "alice", "bob")

	if err := e.sys.Buy("alice", tshirt, "buy-1"); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("Buy = %v, want ErrNotDurable", err)
	}
	if err := e.sys.Send("alice", "bob", 100, ""); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("Send = %v, want ErrNotDurable", err)
	}
	if held := e.journal.HeldCount(); held != 2 {
		t.Fatalf("%d records held, want 2", held)
	}
	// A retry with the key while the record is in flight learns nothing new.
	if err := e.sys.Buy("alice", tshirt, "buy-1"); !errors.Is(err, ErrKeyInFlight) {
		t.Fatalf("retry while pending = %v, want ErrKeyInFlight", err)
	}
	e.mustSee(t, "alice", want{coins: 1000})
	// Late commits: the actor applies them; the callers are long gone.
	e.journal.ReleaseAll(nil)
	e.mustSee(t, "alice", want{coins: 820, items: map[ItemID]int64{tshirt: 1}, sent: map[string]Coins{"bob": 100}})
	e.mustSee(t, "bob", want{coins: 1100, received: map[string]Coins{"alice": 100}})
	// A retry now gets the committed outcome and applies nothing again.
	if err := e.sys.Buy("alice", tshirt, "buy-1"); err != nil {
		t.Fatalf("retry after the commit = %v", err)
	}
	if held := e.journal.HeldCount(); held != 0 {
		t.Fatalf("the retry appended %d records", held)
	}
	e.mustSee(t, "alice", want{coins: 820, items: map[ItemID]int64{tshirt: 1}, sent: map[string]Coins{"bob": 100}})
	e.mustQuiet(t)
	if n := e.sys.PassivateIdle(0); n != 0 {
		t.Fatalf("abandoned requests left %d actors pinned", n)
	}
}

// TestReadTimeout: a read not answered within ReadTimeout is ErrUnavailable,
// and the abandoned request still releases its pin when it is answered.
func TestReadTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.ReadTimeout = shortTimeout
	e := mustNewEnv(t, cfg, liveJournal, "alice")
	entered, gate := make(chan struct{}), make(chan struct{})
	// Stall alice's actor inside Receive (a test-only breach of "Receive
	// never blocks") so that no read can be answered in time.
	e.journal.SetRefuse(func(*Record) error {
		close(entered)
		<-gate
		return nil
	})
	buy := async(func() error { return e.sys.Buy("alice", cup, "") })
	mustClosed(t, entered, "the stalled append")
	if _, err := e.sys.Info("alice"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Info from a stalled actor = %v, want ErrUnavailable", err)
	}
	e.journal.SetRefuse(nil)
	close(gate)
	if err := mustResult(t, buy); err != nil {
		t.Fatal(err)
	}
	e.mustSee(t, "alice", want{coins: 980, items: map[ItemID]int64{cup: 1}})
	if n := e.sys.PassivateIdle(0); n != 0 {
		t.Fatalf("an abandoned read left %d actors pinned", n)
	}
}
