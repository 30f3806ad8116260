package actors

import (
	"errors"
	"testing"
)

func TestSend(t *testing.T) {
	e := mustNewEnv(t, testConfig(), heldJournal, "alice", "bob")
	call := async(func() error { return e.sys.Send("alice", "bob", 30, "") })
	e.journal.MustWaitHeld(t, 1)
	rec := e.journal.CompleteHeld(0, nil) // commits it to the store
	if rec.Kind != Transferred || rec.User != "alice" || rec.Peer != "bob" || rec.Amount != 30 ||
		rec.Item != 0 || rec.Key != "" || rec.Done == nil {
		t.Fatalf("record = %+v", *rec)
	}
	if err := mustResult(t, call); err != nil {
		t.Fatal(err)
	}
	// A success means durable and visible on both sides, with no further
	// record and no waiting.
	e.mustSee(t, "alice", want{coins: 970, sent: map[string]Coins{"bob": 30}})
	e.mustSee(t, "bob", want{coins: 1030, received: map[string]Coins{"alice": 30}})
	if appends, _ := e.journal.Counts(); appends != 1 {
		t.Fatalf("%d records for one transfer", appends)
	}
	e.metrics.mustWaitProcessed(t, [kindCount]int64{KindInfo: 2, KindSend: 1, KindCommitted: 1, KindCredit: 1})
	e.mustQuiet(t)

	// And back, through the batching journal, totals per counterparty.
	e.journal.SetHold(false)
	for _, amount := range []Coins{5, 7} {
		if err := e.sys.Send("bob", "alice", amount, ""); err != nil {
			t.Fatal(err)
		}
	}
	e.mustSee(t, "alice", want{coins: 982, sent: map[string]Coins{"bob": 30}, received: map[string]Coins{"bob": 12}})
	e.mustSee(t, "bob", want{coins: 1018, received: map[string]Coins{"alice": 30}, sent: map[string]Coins{"alice": 12}})
}

func TestSendRefusals(t *testing.T) {
	tests := []struct {
		name       string
		from, to   string
		amount     Coins
		wantErr    error
		wantActive int64 // actors resolved before the refusal
	}{
		{"self", "alice", "alice", 10, ErrSelfTransfer, 0},
		{"zero", "alice", "bob", 0, ErrBadAmount, 0},
		{"negative", "alice", "bob", -5, ErrBadAmount, 0},
		{"min int64", "alice", "bob", -1 << 63, ErrBadAmount, 0},
		{"unknown recipient", "alice", "nobody", 10, ErrUnknownRecipient, 1},
		{"unknown owner", "nobody", "bob", 10, ErrUnknownUser, 0},
		{"both unknown", "nobody", "ghost", 10, ErrUnknownUser, 0},
		{"one over balance", "alice", "bob", 1001, ErrInsufficientCoins, 2},
		{"max int64", "alice", "bob", 1<<63 - 1, ErrInsufficientCoins, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob")
			if err := e.sys.Send(tc.from, tc.to, tc.amount, ""); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Send = %v, want %v", err, tc.wantErr)
			}
			e.mustActive(t, tc.wantActive)
			if appends, _ := e.journal.Counts(); appends != 0 {
				t.Fatalf("a refused transfer appended %d records", appends)
			}
			// Nothing was reserved: the whole balance can still be sent.
			if err := e.sys.Send("alice", "bob", 1000, ""); err != nil {
				t.Fatal(err)
			}
			e.mustSee(t, "alice", want{coins: 0, sent: map[string]Coins{"bob": 1000}})
			e.mustSee(t, "bob", want{coins: 2000, received: map[string]Coins{"alice": 1000}})
			e.mustQuiet(t)
		})
	}
}

// TestSendJournalOutcomes: a refused or failed transfer record changes
// neither side.
func TestSendJournalOutcomes(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob")
		e.journal.SetRefuse(func(*Record) error { return ErrOverloaded })
		if err := e.sys.Send("alice", "bob", 1000, ""); !errors.Is(err, ErrOverloaded) {
			t.Fatalf("Send = %v", err)
		}
		e.journal.SetRefuse(nil)
		if err := e.sys.Send("alice", "bob", 1000, ""); err != nil {
			t.Fatal(err)
		}
		e.mustSee(t, "bob", want{coins: 2000, received: map[string]Coins{"alice": 1000}})
	})
	t.Run("failed", func(t *testing.T) {
		e := mustNewEnv(t, testConfig(), heldJournal, "alice", "bob")
		call := async(func() error { return e.sys.Send("alice", "bob", 1000, "") })
		e.journal.MustWaitHeld(t, 1)
		e.journal.CompleteHeld(0, errInjected)
		if err := mustResult(t, call); !errors.Is(err, errInjected) {
			t.Fatalf("Send = %v", err)
		}
		e.mustSee(t, "alice", want{coins: 1000})
		e.mustSee(t, "bob", want{coins: 1000})
		if n := e.sys.PassivateIdle(0); n != 0 {
			t.Fatalf("a failed transfer left %d actors pinned", n)
		}
	})
}
