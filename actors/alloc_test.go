//go:build !race

package actors

import (
	"errors"
	"testing"
)

// TestAllocBudgets: allocation budgets on the hot paths, measured with
// AllocsPerRun (the race detector allocates, hence the build tag). Raising
// a budget needs a benchmark that shows why.
//
// An actor round trip costs 2, hollywood's floor: the inbox's PopN
// allocates the batch slice and scheduling the idle actor allocates a
// closure. Our side (pooled request with its reply channel, pooled timer,
// cached info body, directory lookup without converting the name) adds
// nothing. Buy adds the journal record (it escapes through the Journal
// interface) and the completion's PopN (the actor is still running when
// the sync journal completes, so nothing is scheduled). Send adds the credit's
// delivery to the recipient's idle actor (PopN + closure).
func TestAllocBudgets(t *testing.T) {
	s := mustBenchSystem(t, "alice", "bob")
	to := []byte("bob")
	w := Wallet{coins: richCoins, received: []Counterparty{{"bank", richCoins - StartingCoins}}}
	buf := make([]byte, 0, 512)
	name := []byte("pink-hoody")
	tests := []struct {
		name   string
		budget float64
		fn     func()
	}{
		{"System.Info, resident user", 2, func() {
			if _, err := s.Info("alice"); err != nil {
				t.Fatal(err)
			}
		}},
		{"System.Buy, resident user", 4, func() {
			if err := s.Buy("alice", pen, ""); err != nil {
				t.Fatal(err)
			}
		}},
		{"System.SendBytes, resident users", 6, func() {
			if err := s.SendBytes("alice", to, 1, ""); err != nil {
				t.Fatal(err)
			}
		}},
		{"Wallet.ReserveItem+ApplyPurchase", 0, func() {
			if err := w.ReserveItem(pen); err != nil {
				t.Fatal(err)
			}
			w.ApplyPurchase(pen)
		}},
		{"Wallet.Reserve+Release", 0, func() {
			if err := w.Reserve(5); err != nil {
				t.Fatal(err)
			}
			w.Release(5)
		}},
		{"appendInfo into a large enough buffer", 0, func() { buf = appendInfo(buf[:0], &w) }},
		{"LookupItem", 0, func() {
			if _, ok := LookupItem(name); !ok {
				t.Fatal("pink-hoody not found")
			}
		}},
		{"ValidUsername", 0, func() {
			if !ValidUsername(name) {
				t.Fatal("rejected")
			}
		}},
		{"error paths", 0, func() {
			if err := s.Buy("alice", 0, ""); !errors.Is(err, ErrUnknownItem) {
				t.Fatal(err)
			}
			if err := s.SendBytes("alice", to, 0, ""); !errors.Is(err, ErrBadAmount) {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		tc.fn() // warm pools and caches
		if got := testing.AllocsPerRun(1000, tc.fn); got > tc.budget {
			t.Errorf("%s: %.0f allocations per run, budget %.0f", tc.name, got, tc.budget)
		} else {
			t.Logf("%s: %.0f allocations per run (budget %.0f)", tc.name, got, tc.budget)
		}
	}
}
