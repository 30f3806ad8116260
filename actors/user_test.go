package actors

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBuy(t *testing.T) {
	tests := []struct {
		name      string
		coins     Coins // buyer's balance
		user      string
		item      ItemID
		wantErr   error
		wantCoins Coins
		wantLoads int // LoadUser calls for the buyer
	}{
		{name: "cup", coins: 1000, user: "alice", item: cup, wantCoins: 980, wantLoads: 1},
		{name: "exact balance", coins: 80, user: "alice", item: tshirt, wantCoins: 0, wantLoads: 1},
		{name: "one coin short", coins: 79, user: "alice", item: tshirt, wantErr: ErrInsufficientCoins,
			wantCoins: 79, wantLoads: 1},
		{name: "empty wallet", coins: 0, user: "alice", item: pen, wantErr: ErrInsufficientCoins, wantLoads: 1},
		{name: "item 0", coins: 1000, user: "alice", item: 0, wantErr: ErrUnknownItem, wantCoins: 1000},
		{name: "item 11", coins: 1000, user: "alice", item: itemCount + 1, wantErr: ErrUnknownItem,
			wantCoins: 1000},
		{name: "unknown user", coins: 1000, user: "nobody", item: cup, wantErr: ErrUnknownUser,
			wantCoins: 1000, wantLoads: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := mustNewEnv(t, testConfig(), liveJournal)
			e.store.Put("alice", stateWith(tc.coins))
			err := e.sys.Buy(tc.user, tc.item, "")
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Buy = %v, want %v", err, tc.wantErr)
			}
			if got := e.store.LoadCount(tc.user); got != tc.wantLoads {
				t.Fatalf("LoadUser(%s) called %d times, want %d", tc.user, got, tc.wantLoads)
			}
			wantAppends := 0
			w := want{coins: tc.coins}
			if tc.wantErr == nil {
				wantAppends = 1
				w = want{coins: tc.wantCoins, items: map[ItemID]int64{tc.item: 1}}
			}
			if appends, _ := e.journal.Counts(); appends != wantAppends {
				t.Fatalf("%d records appended, want %d", appends, wantAppends)
			}
			if tc.coins < StartingCoins {
				w.sent = map[string]Coins{"bank": StartingCoins - tc.coins}
			}
			e.mustSee(t, "alice", w)
			e.mustQuiet(t)
		})
	}
}

// TestBuyRecord checks the record a purchase journals and the messages it
// costs.
func TestBuyRecord(t *testing.T) {
	e := mustNewEnv(t, testConfig(), heldJournal, "alice")
	call := async(func() error { return e.sys.Buy("alice", hoody, "k1") })
	e.journal.MustWaitHeld(t, 1)
	rec := e.journal.CompleteHeld(0, nil) // commits it to the store
	if rec.Kind != Purchased || rec.User != "alice" || rec.Peer != "" || rec.Item != hoody ||
		rec.Amount != 300 || rec.Key != "k1" || rec.PasswordHash != nil || rec.Done == nil {
		t.Fatalf("record = %+v", *rec)
	}
	if err := mustResult(t, call); err != nil {
		t.Fatal(err)
	}
	e.metrics.mustWaitProcessed(t, [kindCount]int64{KindBuy: 1, KindCommitted: 1})
	e.mustSee(t, "alice", want{coins: 700, items: map[ItemID]int64{hoody: 1}})
	e.metrics.mustWaitProcessed(t, [kindCount]int64{KindInfo: 1, KindBuy: 1, KindCommitted: 1})
	if got := e.metrics.waits.Load(); got != 3 {
		t.Fatalf("%d mailbox waits observed, want 3", got)
	}
}

// TestBuyJournalRefuses: a full journal queue answers ErrOverloaded at once,
// and the reservation is released.
func TestBuyJournalRefuses(t *testing.T) {
	e := mustNewEnv(t, testConfig(), liveJournal)
	e.store.Put("alice", stateWith(80))
	e.journal.SetRefuse(func(*Record) error { return ErrOverloaded })
	for range 3 {
		if err := e.sys.Buy("alice", tshirt, ""); !errors.Is(err, ErrOverloaded) {
			t.Fatalf("Buy = %v, want ErrOverloaded", err)
		}
	}
	e.mustSee(t, "alice", want{coins: 80, sent: map[string]Coins{"bank": 920}})
	e.journal.SetRefuse(nil)
	// A leaked reservation would leave nothing available for the t-shirt.
	if err := e.sys.Buy("alice", tshirt, ""); err != nil {
		t.Fatalf("Buy after the journal recovered: %v", err)
	}
	e.mustSee(t, "alice", want{coins: 0, items: map[ItemID]int64{tshirt: 1}, sent: map[string]Coins{"bank": 920}})
	e.mustQuiet(t)
}

// TestBuyJournalFails: a record completed with a definite error is not
// applied; the caller gets that error and the reservation is released.
// (ErrNotDurable is not definite: TestUnknownOutcomeNeverFreesMoney.)
func TestBuyJournalFails(t *testing.T) {
	for _, fail := range []error{ErrClosed, ErrUnavailable, errInjected} {
		t.Run(fail.Error(), func(t *testing.T) {
			e := mustNewEnv(t, testConfig(), heldJournal)
			e.store.Put("alice", stateWith(80))
			call := async(func() error { return e.sys.Buy("alice", tshirt, "") })
			e.journal.MustWaitHeld(t, 1)
			e.journal.CompleteHeld(0, fail)
			if err := mustResult(t, call); !errors.Is(err, fail) {
				t.Fatalf("Buy = %v, want %v", err, fail)
			}
			e.mustSee(t, "alice", want{coins: 80, sent: map[string]Coins{"bank": 920}})
			call = async(func() error { return e.sys.Buy("alice", tshirt, "") })
			e.journal.MustWaitHeld(t, 1)
			e.journal.ReleaseAll(nil)
			if err := mustResult(t, call); err != nil {
				t.Fatalf("Buy after a failed record: %v", err)
			}
			e.mustSee(t, "alice", want{coins: 0, items: map[ItemID]int64{tshirt: 1}, sent: map[string]Coins{"bank": 920}})
		})
	}
}

// TestUnknownOutcomeNeverFreesMoney: a record whose outcome the journal
// could not learn (ErrNotDurable) may have committed. The actor must not
// free its reservation: it stops serving and is rebuilt from the store,
// which has the truth.
func TestUnknownOutcomeNeverFreesMoney(t *testing.T) {
	for _, op := range []string{"buy", "send"} {
		t.Run(op, func(t *testing.T) {
			e := mustNewEnv(t, testConfig(), heldJournal, "alice", "bob")
			// Only the operation under test runs: a second keyed change
			// would race it for the key and the held record.
			change := func() error { return e.sys.Buy("alice", pinkHoody, "k1") }
			if op == "send" {
				change = func() error { return e.sys.Send("alice", "bob", 500, "k1") }
			}
			call := async(change)
			e.journal.MustWaitHeld(t, 1)
			rec := e.journal.Take(0)
			if err := e.store.Apply(rec); err != nil { // it did commit...
				t.Fatal(err)
			}
			rec.Done.JournalDone(ErrNotDurable) // ...but the journal could not tell
			if err := mustResult(t, call); !errors.Is(err, ErrNotDurable) {
				t.Fatalf("%s = %v, want ErrNotDurable", op, err)
			}
			e.journal.SetHold(false)
			// The 500 coins may be spent: the stale actor must not spend them again.
			if err := e.sys.Send("alice", "bob", 1000, ""); err == nil {
				t.Fatal("the whole balance was sent again after an unknown outcome")
			}
			mustPoll(t, "the suspect actors to be rebuilt", func() bool {
				e.sys.PassivateIdle(time.Hour)
				_, err := e.sys.Info("alice")
				return err == nil
			})
			final := want{coins: 500, items: map[ItemID]int64{pinkHoody: 1}}
			if op == "send" {
				final = want{coins: 500, sent: map[string]Coins{"bob": 500}}
			}
			e.mustSee(t, "alice", final)
			if op == "send" {
				e.mustSee(t, "alice", want{coins: 500, sent: map[string]Coins{"bob": 500}})
				mustPoll(t, "bob to be rebuilt", func() bool {
					e.sys.PassivateIdle(time.Hour)
					body, err := e.sys.Info("bob")
					return err == nil && strings.Contains(string(body), `"coins":1500`)
				})
			}
			// The key is the store's now: a retry replays, nothing twice.
			if err := change(); err != nil {
				t.Fatalf("retry with the key: %v", err)
			}
			e.mustSee(t, "alice", final)
		})
	}
}

// TestBrokenActorRebuiltByNextRequest: a broken actor with nothing in
// flight is replaced by the next request that finds it — loaded afresh
// from the store at once — not left answering ErrUnavailable until the
// janitor's next sweep (here: never).
func TestBrokenActorRebuiltByNextRequest(t *testing.T) {
	cfg := testConfig()
	cfg.SweepInterval = time.Hour
	e := mustNewEnv(t, cfg, liveJournal, "alice")
	e.journal.SetRefuse(func(rec *Record) error {
		if rec.Kind == Purchased && rec.Item == socks {
			panic("injected: journal append panicked")
		}
		return nil
	})
	if err := e.sys.Buy("alice", cup, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Buy("alice", socks, ""); !errors.Is(err, ErrInternal) {
		t.Fatalf("Buy that panicked = %v, want ErrInternal", err)
	}
	if got := e.metrics.panicked.Load(); got != 1 {
		t.Fatalf("%d panics counted, want 1", got)
	}
	e.mustSee(t, "alice", want{coins: 980, items: map[ItemID]int64{cup: 1}})
	if got := e.store.LoadCount("alice"); got != 2 {
		t.Fatalf("LoadUser(alice) called %d times, want 2 (a rebuild)", got)
	}
}

// TestPanicRecovery: a panic inside an actor answers ErrInternal, makes the
// user unavailable (never empty), still honours what the journal owes it,
// and the janitor rebuilds it from the store.
func TestPanicRecovery(t *testing.T) {
	cfg := testConfig()
	cfg.SweepInterval = time.Millisecond // the janitor runs all along
	e := mustNewEnv(t, cfg, heldJournal, "alice", "bob")
	events := mustEventLog(t, e.engine)
	e.journal.SetRefuse(func(rec *Record) error {
		if rec.Kind == Purchased && rec.Item == socks {
			panic("injected: journal append panicked")
		}
		return nil
	})
	// A purchase in flight pins alice, so the janitor cannot rebuild her
	// before the assertions below.
	buy := async(func() error { return e.sys.Buy("alice", cup, "") })
	e.journal.MustWaitHeld(t, 1)

	if err := e.sys.Buy("alice", socks, ""); !errors.Is(err, ErrInternal) {
		t.Fatalf("Buy that panicked = %v, want ErrInternal", err)
	}
	unavailable := []struct {
		name string
		call func() error
	}{
		{"info", func() error { _, err := e.sys.Info("alice"); return err }},
		{"buy", func() error { return e.sys.Buy("alice", pen, "") }},
		{"send", func() error { return e.sys.Send("alice", "bob", 1, "") }},
	}
	for _, u := range unavailable {
		if err := u.call(); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s on a broken actor = %v, want ErrUnavailable", u.name, err)
		}
	}
	// A credit to the broken actor: durable in the store, answered.
	credit := async(func() error { return e.sys.Send("bob", "alice", 5, "") })
	e.journal.MustWaitHeld(t, 2)
	if got := e.metrics.passivated.Load(); got != 0 {
		t.Fatalf("a pinned broken actor was passivated")
	}
	if got := e.store.LoadCount("alice"); got != 1 {
		t.Fatalf("reloaded while pinned: %d loads", got)
	}
	e.journal.ReleaseAll(nil)
	if err := mustResult(t, buy); err != nil {
		t.Fatalf("a committed purchase on a broken actor = %v", err)
	}
	if err := mustResult(t, credit); err != nil {
		t.Fatalf("a committed credit to a broken actor = %v", err)
	}
	Fakes.MustWait(t, e.metrics.changes, "the janitor to drop the broken actor", func() bool {
		return e.metrics.passivated.Load() >= 1
	})
	e.journal.SetHold(false)
	e.mustSee(t, "alice", want{coins: 985, items: map[ItemID]int64{cup: 1}, received: map[string]Coins{"bob": 5}})
	if got := e.store.LoadCount("alice"); got != 2 {
		t.Fatalf("LoadUser(alice) called %d times, want 2", got)
	}
	e.mustSee(t, "bob", want{coins: 995, sent: map[string]Coins{"alice": 5}})
	if err := e.sys.Buy("alice", pinkHoody, ""); err != nil {
		t.Fatalf("Buy after the rebuild: %v", err)
	}
	e.mustSee(t, "alice", want{coins: 485, items: map[ItemID]int64{cup: 1, pinkHoody: 1}, received: map[string]Coins{"bob": 5}})
	if got := e.metrics.passivated.Load(); got != 1 {
		t.Fatalf("%d passivations, want only the broken actor", got)
	}
	events.mustNone(t)
}
