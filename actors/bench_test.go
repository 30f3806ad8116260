package actors

import "testing"

// richCoins is a balance no benchmark can spend.
const richCoins = StartingCoins + 1<<50

// mustBenchSystem returns a System with users resident, over a store that
// holds them with richCoins and a journal that commits inside Append
// (actorstest.NewSyncJournal): it isolates the actors' own cost.
func mustBenchSystem(tb testing.TB, users ...string) *System {
	tb.Helper()
	store := Fakes.MustStore(tb)
	for _, u := range users {
		store.Put(u, UserState{PasswordHash: []byte("hash"), Coins: richCoins,
			Received: []Counterparty{{"bank", richCoins - StartingCoins}}})
	}
	cfg := testConfig()
	cfg.Engine, cfg.Journal, cfg.Store, cfg.Metrics = mustEngine(tb), Fakes.NewSyncJournal(store), store, NopMetrics{}
	s, err := NewSystem(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	for _, u := range users {
		if _, err := s.Info(u); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

func BenchmarkWalletReservePurchase(b *testing.B) {
	w := Wallet{coins: richCoins, received: []Counterparty{{"bank", richCoins - StartingCoins}}}
	b.ReportAllocs()
	for b.Loop() {
		if err := w.ReserveItem(pen); err != nil {
			b.Fatal(err)
		}
		w.ApplyPurchase(pen)
	}
}

func BenchmarkWalletInfo(b *testing.B) {
	w := Wallet{coins: 826, items: inv(map[ItemID]int64{cup: 2, pen: 1}),
		received: []Counterparty{{"alice", 30}, {"bob", 1}}, sent: []Counterparty{{"carol", 160}, {"dave", 5}}}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendInfo(buf[:0], &w)
	}
}

// BenchmarkInfo is one /api/info round trip to a resident user's actor.
func BenchmarkInfo(b *testing.B) {
	s := mustBenchSystem(b, "alice")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Info("alice"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInfoParallel(b *testing.B) {
	users := []string{"u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"}
	s := mustBenchSystem(b, users...)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Info(users[i%len(users)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkBuy is a purchase round trip: validate, reserve, journal, apply
// the commit, answer (two actor messages).
func BenchmarkBuy(b *testing.B) {
	s := mustBenchSystem(b, "alice")
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Buy("alice", pen, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSend is a transfer through two actors: the sender's validates
// and journals, applies the commit and hands the credit to the
// recipient's, which answers (three actor messages).
func BenchmarkSend(b *testing.B) {
	s := mustBenchSystem(b, "alice", "bob")
	to := []byte("bob")
	b.ReportAllocs()
	for b.Loop() {
		if err := s.SendBytes("alice", to, 1, ""); err != nil {
			b.Fatal(err)
		}
	}
}
