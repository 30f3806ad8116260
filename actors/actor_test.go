package actors

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// shortTimeout is a write or read timeout that a test expects to expire
// (for a call that is held on purpose). The calls in the same test that must
// succeed are single round trips, which it leaves ample time for.
const shortTimeout = 500 * time.Millisecond

// errInjected is a journal failure made up by a test.
var errInjected = errors.New("injected journal failure")

// journalMode says how an env's journal completes records.
type journalMode int

const (
	liveJournal journalMode = iota // commits asynchronously in batches, like persist's
	heldJournal                    // keeps every record until the test completes it
)

// mustNewEnv starts a System whose store holds users (1000 coins each) over
// a journal in mode.
func mustNewEnv(tb testing.TB, cfg Config, mode journalMode, users ...string) *env {
	tb.Helper()
	store := Fakes.MustStore(tb, users...)
	if mode == heldJournal {
		return mustEnv(tb, cfg, store, Fakes.MustHeldJournal(tb, store))
	}
	return mustEnv(tb, cfg, store, Fakes.MustJournal(tb, store, 256))
}

// stateWith is a consistent stored state with the given balance; the
// difference to StartingCoins went to or came from "bank".
func stateWith(coins Coins) UserState {
	st := UserState{PasswordHash: []byte("hash"), Coins: coins}
	switch {
	case coins < StartingCoins:
		st.Sent = []Counterparty{{"bank", StartingCoins - coins}}
	case coins > StartingCoins:
		st.Received = []Counterparty{{"bank", coins - StartingCoins}}
	}
	return st
}

// want is a user's expected durable state.
type want struct {
	coins    Coins
	items    map[ItemID]int64
	received map[string]Coins
	sent     map[string]Coins
}

// mustSee checks that both the user's Info and the store show w.
func (e *env) mustSee(tb testing.TB, user string, w want) {
	tb.Helper()
	body, err := e.sys.Info(user)
	if err != nil {
		tb.Fatalf("Info(%s): %v", user, err)
	}
	wallet := Wallet{coins: w.coins, items: inv(w.items), received: linesOf(w.received), sent: linesOf(w.sent)}
	mustMatchWallet(tb, body, &wallet)
	st, ok := e.store.State(user)
	if !ok {
		tb.Fatalf("store has no %s", user)
	}
	if st.Coins != w.coins || st.Inventory != wallet.items ||
		!sameTotals(totalsMap(st.Received), w.received) || !sameTotals(totalsMap(st.Sent), w.sent) {
		tb.Fatalf("store has %s = %+v, want %+v", user, st, w)
	}
}

// mustQuiet checks that no message waits in any mailbox.
func (e *env) mustQuiet(tb testing.TB) {
	tb.Helper()
	if st := e.sys.Stats(); st.MailboxDepth != 0 || st.MailboxDepthMax != 0 {
		tb.Fatalf("mailboxes not empty: %+v", st)
	}
}

func (e *env) mustActive(tb testing.TB, n int64) {
	tb.Helper()
	if got := e.sys.Stats().Active; got != n {
		tb.Fatalf("%d active actors, want %d", got, n)
	}
}

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
	rec := e.journal.Take(0)
	if rec.Kind != Purchased || rec.User != "alice" || rec.Peer != "" || rec.Item != hoody ||
		rec.Amount != 300 || rec.Key != "k1" || rec.PasswordHash != nil || rec.Done == nil {
		t.Fatalf("record = %+v", *rec)
	}
	if err := e.store.Apply(rec); err != nil {
		t.Fatal(err)
	}
	rec.Done.JournalDone(nil)
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

// TestInfoShowsDurableOnly: while a purchase or a transfer is journaled but
// not committed, every read shows the old state.
func TestInfoShowsDurableOnly(t *testing.T) {
	e := mustNewEnv(t, testConfig(), heldJournal, "alice", "bob")
	buy := async(func() error { return e.sys.Buy("alice", pinkHoody, "") })
	e.journal.MustWaitHeld(t, 1)
	send := async(func() error { return e.sys.Send("alice", "bob", 100, "") })
	e.journal.MustWaitHeld(t, 2)
	for _, u := range []string{"alice", "bob"} {
		body, err := e.sys.Info(u)
		if err != nil || string(body) != emptyInfo {
			t.Fatalf("Info(%s) while pending = %s, %v", u, body, err)
		}
	}
	// The reservations count against new requests all the same.
	if err := e.sys.Send("alice", "bob", 401, ""); !errors.Is(err, ErrInsufficientCoins) {
		t.Fatalf("Send beyond the available balance = %v", err)
	}
	mustPending(t, buy)
	mustPending(t, send)
	e.journal.CompleteHeld(0, nil)
	if err := mustResult(t, buy); err != nil {
		t.Fatal(err)
	}
	e.mustSee(t, "alice", want{coins: 500, items: map[ItemID]int64{pinkHoody: 1}})
	if body, err := e.sys.Info("bob"); err != nil || string(body) != emptyInfo {
		t.Fatalf("Info(bob) before the transfer commits = %s, %v", body, err)
	}
	e.journal.CompleteHeld(0, nil)
	if err := mustResult(t, send); err != nil {
		t.Fatal(err)
	}
	e.mustSee(t, "alice", want{coins: 400, items: map[ItemID]int64{pinkHoody: 1}, sent: map[string]Coins{"bob": 100}})
	e.mustSee(t, "bob", want{coins: 1100, received: map[string]Coins{"alice": 100}})
	e.mustQuiet(t)
}

// TestInfoCache: the cached body is shared until the state changes, and a
// body handed out is never modified afterwards.
func TestInfoCache(t *testing.T) {
	e := mustNewEnv(t, testConfig(), liveJournal, "alice")
	first, err := e.sys.Info("alice")
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.sys.Info("alice")
	if err != nil {
		t.Fatal(err)
	}
	if &first[0] != &again[0] {
		t.Fatal("unchanged state: body rebuilt instead of reused")
	}
	if err := e.sys.Buy("alice", cup, ""); err != nil {
		t.Fatal(err)
	}
	after, err := e.sys.Info("alice")
	if err != nil {
		t.Fatal(err)
	}
	if string(first) != emptyInfo {
		t.Fatalf("a body handed out changed to %s", first)
	}
	if want := `{"coins":980,"inventory":[{"type":"cup","quantity":1}],"coinHistory":{"received":[],"sent":[]}}`; string(after) != want {
		t.Fatalf("Info after Buy = %s", after)
	}
}

func TestSend(t *testing.T) {
	e := mustNewEnv(t, testConfig(), heldJournal, "alice", "bob")
	call := async(func() error { return e.sys.Send("alice", "bob", 30, "") })
	e.journal.MustWaitHeld(t, 1)
	rec := e.journal.Take(0)
	if rec.Kind != Transferred || rec.User != "alice" || rec.Peer != "bob" || rec.Amount != 30 ||
		rec.Item != 0 || rec.Key != "" || rec.Done == nil {
		t.Fatalf("record = %+v", *rec)
	}
	if err := e.store.Apply(rec); err != nil {
		t.Fatal(err)
	}
	rec.Done.JournalDone(nil)
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

func TestLookup(t *testing.T) {
	e := mustNewEnv(t, testConfig(), liveJournal, "alice")
	acc, err := e.sys.Lookup("alice")
	if err != nil {
		t.Fatal(err)
	}
	if string(acc.PasswordHash()) != "hash:alice" || acc.Digest() != nil {
		t.Fatalf("hash %q digest %v", acc.PasswordHash(), acc.Digest())
	}
	d := &[32]byte{1, 2, 3}
	acc.SetDigest(d)
	again, err := e.sys.Lookup("alice")
	if err != nil || again.Digest() != d {
		t.Fatalf("digest not remembered: %v, %v", again.Digest(), err)
	}
	if got := e.store.LoadCount("alice"); got != 1 {
		t.Fatalf("LoadUser called %d times", got)
	}
	if _, err := e.sys.Lookup("nobody"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("Lookup(nobody) = %v", err)
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

func TestPassivation(t *testing.T) {
	e := mustNewEnv(t, testConfig(), liveJournal, "alice", "bob")
	events := mustEventLog(t, e.engine)
	if err := e.sys.Buy("alice", book, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Send("alice", "bob", 50, ""); err != nil {
		t.Fatal(err)
	}
	e.mustActive(t, 2)
	if n := e.sys.PassivateIdle(time.Hour); n != 2 {
		t.Fatalf("recently used actors passivated: %d left", n)
	}
	if !e.sys.Resident("alice") || e.sys.Resident("carol") {
		t.Fatal("Resident: alice should be, carol should not")
	}
	old := e.sys.dir.stripe("alice").get("alice")
	if n := e.sys.PassivateIdle(0); n != 0 {
		t.Fatalf("%d actors left after passivating all idle ones", n)
	}
	e.mustActive(t, 0)
	if e.sys.Resident("alice") {
		t.Fatal("Resident after passivation")
	}
	if got := e.metrics.passivated.Load(); got != 2 {
		t.Fatalf("%d passivations observed, want 2", got)
	}
	if !old.dead() || e.sys.dir.stripe("alice").get("alice") != nil {
		t.Fatal("passivated handle still live or in the directory")
	}
	id := strings.TrimPrefix(old.pid.ID, "u/")
	mustPoll(t, "the passivated actor to stop", func() bool { return e.engine.Registry.GetPID("u", id) == nil })
	// The next request reloads from the store, which holds every commit.
	e.mustSee(t, "alice", want{coins: 900, items: map[ItemID]int64{book: 1}, sent: map[string]Coins{"bob": 50}})
	e.mustSee(t, "bob", want{coins: 1050, received: map[string]Coins{"alice": 50}})
	for _, u := range []string{"alice", "bob"} {
		if got := e.store.LoadCount(u); got != 2 {
			t.Fatalf("LoadUser(%s) called %d times, want 2", u, got)
		}
	}
	if fresh := e.sys.dir.stripe("alice").get("alice"); fresh == old || fresh.pid.ID == old.pid.ID {
		t.Fatal("reactivation reused the passivated actor")
	}
	e.mustActive(t, 2)
	if err := e.sys.Send("bob", "alice", 25, ""); err != nil {
		t.Fatal(err)
	}
	e.mustSee(t, "alice", want{coins: 925, items: map[ItemID]int64{book: 1},
		sent: map[string]Coins{"bob": 50}, received: map[string]Coins{"bob": 25}})
	events.mustNone(t)
}

// TestNoPassivationWhilePinned: an actor that is owed a journal outcome or a
// credit is never passivated, however idle it looks.
func TestNoPassivationWhilePinned(t *testing.T) {
	cfg := testConfig()
	cfg.IdleTTL = time.Nanosecond
	cfg.SweepInterval = time.Millisecond // the janitor sweeps all along
	e := mustNewEnv(t, cfg, heldJournal, "alice", "bob", "carol")
	events := mustEventLog(t, e.engine)
	buy := async(func() error { return e.sys.Buy("alice", cup, "") })
	send := async(func() error { return e.sys.Send("carol", "bob", 7, "") })
	e.journal.MustWaitHeld(t, 2)
	for range 3 {
		if n := e.sys.PassivateIdle(0); n != 3 {
			t.Fatalf("%d resident while three are pinned", n)
		}
	}
	e.journal.ReleaseAll(nil)
	for _, c := range []<-chan error{buy, send} {
		if err := mustResult(t, c); err != nil {
			t.Fatal(err)
		}
	}
	// Once answered, nothing is pinned: the janitor passivates all three.
	Fakes.MustWait(t, e.metrics.changes, "the janitor to passivate all", func() bool {
		return e.sys.Stats().Active == 0
	})
	e.mustActive(t, 0)
	e.journal.SetHold(false)
	e.mustSee(t, "alice", want{coins: 980, items: map[ItemID]int64{cup: 1}})
	e.mustSee(t, "bob", want{coins: 1007, received: map[string]Coins{"carol": 7}})
	e.mustSee(t, "carol", want{coins: 993, sent: map[string]Coins{"bob": 7}})
	events.mustNone(t)
}

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
		if err := e.sys.Buy("alice", cup, "b1"); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if err := e.sys.Send("alice", "bob", 5, "s1"); err != nil {
			t.Fatalf("retry: %v", err)
		}
		e.mustSee(t, "alice", want{coins: 975, items: map[ItemID]int64{cup: 1}, sent: map[string]Coins{"bob": 5}})
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
		if err := e.sys.Buy("alice", cup, "b1"); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if err := e.sys.Send("alice", "bob", 5, "s1"); err != nil {
			t.Fatalf("retry: %v", err)
		}
		e.mustSee(t, "alice", want{coins: 975, items: map[ItemID]int64{cup: 1}, sent: map[string]Coins{"bob": 5}})
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

func TestConfigValidate(t *testing.T) {
	engine := mustEngine(t)
	store := Fakes.MustStore(t)
	good := func() Config {
		c := testConfig()
		c.Engine, c.Journal, c.Store, c.Metrics = engine, Fakes.MustJournal(t, store, 1), store, NopMetrics{}
		return c
	}
	tests := []struct {
		name   string
		modify func(c *Config)
	}{
		{"no engine", func(c *Config) { c.Engine = nil }},
		{"no journal", func(c *Config) { c.Journal = nil }},
		{"no store", func(c *Config) { c.Store = nil }},
		{"no metrics", func(c *Config) { c.Metrics = nil }},
		{"inbox 0", func(c *Config) { c.InboxSize = 0 }},
		{"inflight 0", func(c *Config) { c.InflightPerUserMax = 0 }},
		{"idle 0", func(c *Config) { c.IdleTTL = 0 }},
		{"sweep 0", func(c *Config) { c.SweepInterval = 0 }},
		{"load timeout negative", func(c *Config) { c.LoadTimeout = -1 }},
		{"write timeout 0", func(c *Config) { c.WriteTimeout = 0 }},
		{"read timeout 0", func(c *Config) { c.ReadTimeout = 0 }},
	}
	for _, tc := range tests {
		c := good()
		tc.modify(&c)
		if s, err := NewSystem(c); err == nil {
			s.Close()
			t.Errorf("%s: NewSystem accepted %+v", tc.name, c)
		}
	}
	s, err := NewSystem(good())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st != (Stats{}) {
		t.Fatalf("Stats() of a new system = %+v", st)
	}
}
