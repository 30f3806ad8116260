//go:build !race

package actorstest

import (
	"testing"

	"merch/actors"
)

type nopCompletion struct{}

func (nopCompletion) JournalDone(error) {}

// TestSyncJournalAllocs: committing through NewSyncJournal allocates
// nothing, so the callers' allocation budgets measure the callers only.
func TestSyncJournalAllocs(t *testing.T) {
	s := MustStore(t)
	rich := actors.UserState{Coins: actors.StartingCoins + 1<<40,
		Received: []actors.Counterparty{{User: "bank", Amount: 1 << 40}}}
	s.Put("alice", rich)
	s.Put("bob", rich)
	j := NewSyncJournal(s)
	buy := &actors.Record{Kind: actors.Purchased, User: "alice", Item: 4, Amount: 10, Done: nopCompletion{}}
	send := &actors.Record{Kind: actors.Transferred, User: "alice", Peer: "bob", Amount: 1, Done: nopCompletion{}}
	for _, rec := range []*actors.Record{buy, send} {
		if err := j.Append(rec); err != nil { // warm the history maps
			t.Fatal(err)
		}
		if got := testing.AllocsPerRun(1000, func() {
			if err := j.Append(rec); err != nil {
				t.Fatal(err)
			}
		}); got != 0 {
			t.Errorf("%s: %.0f allocations per Append, want 0", rec.Kind, got)
		}
	}
}
