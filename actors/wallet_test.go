package actors

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// inv builds an inventory from item → quantity.
func inv(q map[ItemID]int64) [itemCount + 1]int64 {
	var a [itemCount + 1]int64
	for id, n := range q {
		a[id] = n
	}
	return a
}

// walletCase is one command applied to a wallet with no engine: the
// command's error (or panic) and the wallet it leaves.
type walletCase struct {
	name      string
	state     Wallet
	cmd       func(w *Wallet) error
	wantState Wallet
	wantErr   error
	wantPanic string // substring of the panic value; "" for none
}

func runWalletCases(t *testing.T, cases []walletCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.state
			panicked, err := callRecover(func() error { return tc.cmd(&w) })
			if tc.wantPanic != "" {
				if panicked == nil {
					t.Fatalf("no panic; err = %v, wallet = %+v", err, w)
				}
				if !strings.Contains(panicked.(string), tc.wantPanic) {
					t.Fatalf("panic %q, want it to contain %q", panicked, tc.wantPanic)
				}
				return
			}
			if panicked != nil {
				t.Fatalf("unexpected panic: %v", panicked)
			}
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(w, tc.wantState) {
				t.Fatalf("wallet = %+v\nwant     %+v", w, tc.wantState)
			}
		})
	}
}

// callRecover runs fn and returns the value it panicked with or its error.
func callRecover(fn func() error) (panicked any, err error) {
	defer func() { panicked = recover() }()
	return nil, fn()
}

func reserve(a Coins) func(*Wallet) error { return func(w *Wallet) error { return w.Reserve(a) } }

func reserveItem(id ItemID) func(*Wallet) error {
	return func(w *Wallet) error { return w.ReserveItem(id) }
}

func release(a Coins) func(*Wallet) error {
	return func(w *Wallet) error { w.Release(a); return nil }
}

func applyPurchase(id ItemID) func(*Wallet) error {
	return func(w *Wallet) error { w.ApplyPurchase(id); return nil }
}

func applySent(u string, a Coins) func(*Wallet) error {
	return func(w *Wallet) error { w.ApplySent(u, a); return nil }
}

func applyReceived(u string, a Coins) func(*Wallet) error {
	return func(w *Wallet) error { return w.ApplyReceived(u, a) }
}

func TestWalletReserve(t *testing.T) {
	runWalletCases(t, []walletCase{
		{name: "part of balance", state: Wallet{coins: 1000}, cmd: reserve(1),
			wantState: Wallet{coins: 1000, reserved: 1}},
		{name: "exact balance", state: Wallet{coins: 1000}, cmd: reserve(1000),
			wantState: Wallet{coins: 1000, reserved: 1000}},
		{name: "one over balance", state: Wallet{coins: 1000}, cmd: reserve(1001),
			wantState: Wallet{coins: 1000}, wantErr: ErrInsufficientCoins},
		{name: "exact available next to a reservation", state: Wallet{coins: 1000, reserved: 900},
			cmd: reserve(100), wantState: Wallet{coins: 1000, reserved: 1000}},
		{name: "one over available next to a reservation", state: Wallet{coins: 1000, reserved: 900},
			cmd: reserve(101), wantState: Wallet{coins: 1000, reserved: 900}, wantErr: ErrInsufficientCoins},
		{name: "nothing available", state: Wallet{coins: 1000, reserved: 1000}, cmd: reserve(1),
			wantState: Wallet{coins: 1000, reserved: 1000}, wantErr: ErrInsufficientCoins},
		{name: "zero balance", state: Wallet{}, cmd: reserve(1), wantErr: ErrInsufficientCoins},
		{name: "zero amount", state: Wallet{coins: 1000}, cmd: reserve(0),
			wantState: Wallet{coins: 1000}, wantErr: ErrBadAmount},
		{name: "negative amount", state: Wallet{coins: 1000}, cmd: reserve(-1),
			wantState: Wallet{coins: 1000}, wantErr: ErrBadAmount},
		{name: "min int64", state: Wallet{coins: 1000}, cmd: reserve(math.MinInt64),
			wantState: Wallet{coins: 1000}, wantErr: ErrBadAmount},
		{name: "max int64", state: Wallet{coins: 1000}, cmd: reserve(math.MaxInt64),
			wantState: Wallet{coins: 1000}, wantErr: ErrInsufficientCoins},
		{name: "max int64 balance, max int64 amount", state: Wallet{coins: math.MaxInt64}, cmd: reserve(math.MaxInt64),
			wantState: Wallet{coins: math.MaxInt64, reserved: math.MaxInt64}},
		{name: "max int64 with a reservation", state: Wallet{coins: math.MaxInt64, reserved: 1},
			cmd: reserve(math.MaxInt64), wantState: Wallet{coins: math.MaxInt64, reserved: 1}, wantErr: ErrInsufficientCoins},
	})
}

func TestWalletReserveItem(t *testing.T) {
	runWalletCases(t, []walletCase{
		{name: "cup", state: Wallet{coins: 1000}, cmd: reserveItem(cup),
			wantState: Wallet{coins: 1000, reserved: 20}},
		{name: "pink-hoody exact available", state: Wallet{coins: 600, reserved: 100}, cmd: reserveItem(pinkHoody),
			wantState: Wallet{coins: 600, reserved: 600}},
		{name: "pink-hoody one short", state: Wallet{coins: 599, reserved: 100}, cmd: reserveItem(pinkHoody),
			wantState: Wallet{coins: 599, reserved: 100}, wantErr: ErrInsufficientCoins},
		{name: "item 0", state: Wallet{coins: 1000}, cmd: reserveItem(0),
			wantState: Wallet{coins: 1000}, wantErr: ErrUnknownItem},
		{name: "item 11", state: Wallet{coins: 1000}, cmd: reserveItem(itemCount + 1),
			wantState: Wallet{coins: 1000}, wantErr: ErrUnknownItem},
		{name: "item 255", state: Wallet{coins: 1000}, cmd: reserveItem(255),
			wantState: Wallet{coins: 1000}, wantErr: ErrUnknownItem},
		{name: "unknown item with no money", state: Wallet{}, cmd: reserveItem(0), wantErr: ErrUnknownItem},
	})
}

func TestWalletRelease(t *testing.T) {
	runWalletCases(t, []walletCase{
		{name: "all", state: Wallet{coins: 1000, reserved: 100}, cmd: release(100),
			wantState: Wallet{coins: 1000}},
		{name: "part", state: Wallet{coins: 1000, reserved: 100}, cmd: release(40),
			wantState: Wallet{coins: 1000, reserved: 60}},
		{name: "zero", state: Wallet{coins: 1000, reserved: 100}, cmd: release(0),
			wantState: Wallet{coins: 1000, reserved: 100}},
		{name: "more than reserved", state: Wallet{coins: 1000, reserved: 100}, cmd: release(101),
			wantPanic: "negative reservation"},
		{name: "nothing reserved", state: Wallet{coins: 1000}, cmd: release(1),
			wantPanic: "negative reservation"},
	})
}

func TestWalletApplyPurchase(t *testing.T) {
	runWalletCases(t, []walletCase{
		{name: "reserved exactly", state: Wallet{coins: 1000, reserved: 80}, cmd: applyPurchase(tshirt),
			wantState: Wallet{coins: 920, items: inv(map[ItemID]int64{tshirt: 1})}},
		{name: "other reservations stay", state: Wallet{coins: 1000, reserved: 100}, cmd: applyPurchase(cup),
			wantState: Wallet{coins: 980, reserved: 80, items: inv(map[ItemID]int64{cup: 1})}},
		{name: "adds to quantity", state: Wallet{coins: 50, reserved: 50, items: inv(map[ItemID]int64{book: 2})},
			cmd: applyPurchase(book), wantState: Wallet{coins: 0, items: inv(map[ItemID]int64{book: 3})}},
		{name: "whole balance", state: Wallet{coins: 500, reserved: 500}, cmd: applyPurchase(pinkHoody),
			wantState: Wallet{coins: 0, items: inv(map[ItemID]int64{pinkHoody: 1})}},
		{name: "nothing reserved", state: Wallet{coins: 1000}, cmd: applyPurchase(cup),
			wantPanic: "settling more than reserved"},
		{name: "less reserved than price", state: Wallet{coins: 1000, reserved: 10}, cmd: applyPurchase(cup),
			wantPanic: "settling more than reserved"},
		{name: "item 0", state: Wallet{coins: 1000, reserved: 100}, cmd: applyPurchase(0),
			wantPanic: "settling more than reserved"},
		{name: "item 11", state: Wallet{coins: 1000, reserved: 100}, cmd: applyPurchase(itemCount + 1),
			wantPanic: "settling more than reserved"},
		{name: "reservation above balance", state: Wallet{coins: 10, reserved: 20}, cmd: applyPurchase(cup),
			wantPanic: "negative balance"},
	})
}

func TestWalletApplySent(t *testing.T) {
	runWalletCases(t, []walletCase{
		{name: "first transfer", state: Wallet{coins: 1000, reserved: 300}, cmd: applySent("bob", 300),
			wantState: Wallet{coins: 700, sent: []Counterparty{{"bob", 300}}}},
		{name: "adds to the total", state: Wallet{coins: 700, reserved: 50, sent: []Counterparty{{"bob", 300}}},
			cmd: applySent("bob", 20), wantState: Wallet{coins: 680, reserved: 30, sent: []Counterparty{{"bob", 320}}}},
		{name: "second counterparty", state: Wallet{coins: 700, reserved: 1, sent: []Counterparty{{"bob", 300}}},
			cmd: applySent("ann", 1), wantState: Wallet{coins: 699, sent: []Counterparty{{"ann", 1}, {"bob", 300}}}},
		{name: "whole balance", state: Wallet{coins: 1000, reserved: 1000}, cmd: applySent("bob", 1000),
			wantState: Wallet{sent: []Counterparty{{"bob", 1000}}}},
		{name: "more than reserved", state: Wallet{coins: 1000, reserved: 99}, cmd: applySent("bob", 100),
			wantPanic: "settling more than reserved"},
		{name: "zero", state: Wallet{coins: 1000, reserved: 100}, cmd: applySent("bob", 0),
			wantPanic: "settling more than reserved"},
		{name: "negative", state: Wallet{coins: 1000, reserved: 100}, cmd: applySent("bob", -1),
			wantPanic: "settling more than reserved"},
		{name: "max int64", state: Wallet{coins: 1000, reserved: 1000}, cmd: applySent("bob", math.MaxInt64),
			wantPanic: "settling more than reserved"},
	})
}

func TestWalletApplyReceived(t *testing.T) {
	runWalletCases(t, []walletCase{
		{name: "first credit", state: Wallet{coins: 1000}, cmd: applyReceived("bob", 30),
			wantState: Wallet{coins: 1030, received: []Counterparty{{"bob", 30}}}},
		{name: "adds to the total", state: Wallet{coins: 1030, reserved: 5, received: []Counterparty{{"bob", 30}}},
			cmd:       applyReceived("bob", 1),
			wantState: Wallet{coins: 1031, reserved: 5, received: []Counterparty{{"bob", 31}}}},
		{name: "to an empty wallet", state: Wallet{}, cmd: applyReceived("bob", 1),
			wantState: Wallet{coins: 1, received: []Counterparty{{"bob", 1}}}},
		{name: "zero", state: Wallet{coins: 1000}, cmd: applyReceived("bob", 0),
			wantState: Wallet{coins: 1000}, wantErr: ErrBadAmount},
		{name: "negative", state: Wallet{coins: 1000}, cmd: applyReceived("bob", -1),
			wantState: Wallet{coins: 1000}, wantErr: ErrBadAmount},
		{name: "up to max int64", state: Wallet{coins: math.MaxInt64 - 10}, cmd: applyReceived("bob", 10),
			wantState: Wallet{coins: math.MaxInt64, received: []Counterparty{{"bob", 10}}}},
		{name: "one past max int64", state: Wallet{coins: math.MaxInt64 - 10}, cmd: applyReceived("bob", 11),
			wantState: Wallet{coins: math.MaxInt64 - 10}, wantErr: ErrBadAmount},
		{name: "max int64 to an empty wallet", state: Wallet{}, cmd: applyReceived("bob", math.MaxInt64),
			wantState: Wallet{coins: math.MaxInt64, received: []Counterparty{{"bob", math.MaxInt64}}}},
		{name: "max int64 overflows", state: Wallet{coins: 1}, cmd: applyReceived("bob", math.MaxInt64),
			wantState: Wallet{coins: 1}, wantErr: ErrBadAmount},
	})
}

func TestWalletAvailable(t *testing.T) {
	tests := []struct {
		name  string
		state Wallet
		want  Coins
	}{
		{"new", NewWallet(), StartingCoins},
		{"reserved part", Wallet{coins: 1000, reserved: 300}, 700},
		{"reserved all", Wallet{coins: 1000, reserved: 1000}, 0},
		{"empty", Wallet{}, 0},
		{"max", Wallet{coins: math.MaxInt64}, math.MaxInt64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.state
			if got := w.Available(); got != tc.want {
				t.Fatalf("Available() = %d, want %d", got, tc.want)
			}
			if got := w.Coins(); got != tc.state.coins {
				t.Fatalf("Coins() = %d, want the durable %d", got, tc.state.coins)
			}
		})
	}
}

// TestWalletReadsDurableOnly: a reservation changes what may be reserved,
// never what is shown.
func TestWalletReadsDurableOnly(t *testing.T) {
	w := NewWallet()
	if err := w.ReserveItem(pinkHoody); err != nil {
		t.Fatal(err)
	}
	if err := w.Reserve(200); err != nil {
		t.Fatal(err)
	}
	if w.Coins() != 1000 || w.Available() != 300 || w.Quantity(pinkHoody) != 0 {
		t.Fatalf("coins %d available %d quantity %d", w.Coins(), w.Available(), w.Quantity(pinkHoody))
	}
	if got := string(appendInfo(nil, &w)); got != emptyInfo {
		t.Fatalf("info with reservations = %s", got)
	}
	w.ApplyPurchase(pinkHoody)
	w.ApplySent("bob", 200)
	if w.Coins() != 300 || w.Available() != 300 || w.Quantity(pinkHoody) != 1 {
		t.Fatalf("coins %d available %d quantity %d", w.Coins(), w.Available(), w.Quantity(pinkHoody))
	}
	if err := w.check(); err != nil {
		t.Fatal(err)
	}
}

func TestWalletQuantity(t *testing.T) {
	w := Wallet{items: inv(map[ItemID]int64{cup: 3, pinkHoody: 1})}
	tests := []struct {
		id   ItemID
		want int64
	}{{cup, 3}, {pinkHoody, 1}, {pen, 0}, {0, 0}, {itemCount + 1, 0}, {255, 0}}
	for _, tc := range tests {
		if got := w.Quantity(tc.id); got != tc.want {
			t.Errorf("Quantity(%d) = %d, want %d", tc.id, got, tc.want)
		}
	}
}

func TestLoadWallet(t *testing.T) {
	tests := []struct {
		name      string
		state     UserState
		wantState Wallet
		wantErr   string // substring; "" for none
	}{
		{name: "new user", state: UserState{Coins: 1000}, wantState: Wallet{coins: 1000}},
		{name: "history adds up",
			state: UserState{Coins: 1000 + 30 - 160 - 40,
				Inventory: inv(map[ItemID]int64{cup: 2}),
				Received:  []Counterparty{{"bob", 30}},
				Sent:      []Counterparty{{"bob", 100}, {"carol", 60}}},
			wantState: Wallet{coins: 830, items: inv(map[ItemID]int64{cup: 2}),
				received: []Counterparty{{"bob", 30}}, sent: []Counterparty{{"bob", 100}, {"carol", 60}}}},
		{name: "everything spent",
			state:     UserState{Coins: 0, Inventory: inv(map[ItemID]int64{pinkHoody: 2})},
			wantState: Wallet{items: inv(map[ItemID]int64{pinkHoody: 2})}},
		{name: "duplicate lines are summed",
			state:     UserState{Coins: 1030, Received: []Counterparty{{"bob", 10}, {"bob", 20}}},
			wantState: Wallet{coins: 1030, received: []Counterparty{{"bob", 30}}}},
		{name: "negative balance",
			state:   UserState{Coins: -10, Sent: []Counterparty{{"bob", 1010}}},
			wantErr: "invariant: balance -10"},
		{name: "history does not add up",
			state:   UserState{Coins: 999},
			wantErr: "invariant: 1000 + 0 received - 0 sent - 0 spent != balance 999"},
		{name: "purchase missing from balance",
			state:   UserState{Coins: 1000, Inventory: inv(map[ItemID]int64{pen: 1})},
			wantErr: "!= balance 1000"},
		{name: "received missing from balance",
			state:   UserState{Coins: 1000, Received: []Counterparty{{"bob", 1}}},
			wantErr: "!= balance 1000"},
		{name: "negative quantity",
			state:   UserState{Coins: 1020, Inventory: inv(map[ItemID]int64{cup: -1})},
			wantErr: "negative quantity of cup"},
		{name: "negative received line",
			state:   UserState{Coins: 995, Received: []Counterparty{{"bob", -5}}},
			wantErr: "invariant"},
		{name: "negative sent line",
			state:   UserState{Coins: 1100, Sent: []Counterparty{{"bob", -100}}},
			wantErr: "invariant"},
		{name: "inventory value overflows",
			// 2^62 pink hoodies cost 125·2^64 coins, which wraps to 0.
			state:   UserState{Coins: 1000, Inventory: inv(map[ItemID]int64{pinkHoody: 1 << 62})},
			wantErr: "invariant"},
		{name: "received total overflows",
			// 2·(2^63−1) + 2 wraps to 0.
			state: UserState{Coins: 1000,
				Received: []Counterparty{{"a", math.MaxInt64}, {"b", math.MaxInt64}, {"c", 2}}},
			wantErr: "invariant"},
		{name: "one counterparty's total overflows",
			state: UserState{Coins: 1000,
				Received: []Counterparty{{"a", math.MaxInt64}, {"a", math.MaxInt64}, {"a", 2}}},
			wantErr: "invariant"},
		{name: "sent total overflows",
			state: UserState{Coins: 1000,
				Sent: []Counterparty{{"a", math.MaxInt64}, {"b", math.MaxInt64}, {"c", 2}}},
			wantErr: "invariant"},
		{name: "balance plus history overflows",
			state: UserState{Coins: math.MaxInt64,
				Received: []Counterparty{{"a", math.MaxInt64 - 999}}, Sent: []Counterparty{{"b", 1000}}},
			wantErr: "invariant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.state
			w, err := LoadWallet(&st)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q (wallet %+v)", err, tc.wantErr, w)
				}
				if !reflect.DeepEqual(w, Wallet{}) {
					t.Fatalf("refused state still built a wallet: %+v", w)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(w, tc.wantState) {
				t.Fatalf("wallet = %+v\nwant     %+v", w, tc.wantState)
			}
		})
	}
}

func TestNewWallet(t *testing.T) {
	w := NewWallet()
	if !reflect.DeepEqual(w, Wallet{coins: StartingCoins}) || StartingCoins != 1000 {
		t.Fatalf("NewWallet() = %+v", w)
	}
	if err := w.check(); err != nil {
		t.Fatal(err)
	}
}

// totalsMap turns history lines into user → total.
func totalsMap(lines []Counterparty) map[string]Coins {
	m := make(map[string]Coins, len(lines))
	for _, c := range lines {
		m[c.User] += c.Amount
	}
	return m
}

// linesOf turns user → total into sorted history lines, as a wallet keeps
// them.
func linesOf(m map[string]Coins) []Counterparty {
	var out []Counterparty
	for u, a := range m {
		out = addTotal(out, u, a)
	}
	return out
}

func sameTotals(a, b map[string]Coins) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestHistorySorted: lines stay sorted by user however they arrive, one
// per counterparty, and History hands out copies.
func TestHistorySorted(t *testing.T) {
	w := NewWallet()
	for _, u := range []string{"c", "a", "B", "b", "a", "c", "_"} {
		if err := w.ApplyReceived(u, 1); err != nil {
			t.Fatal(err)
		}
	}
	want := []Counterparty{{"B", 1}, {"_", 1}, {"a", 2}, {"b", 1}, {"c", 2}}
	received, sent := w.History()
	if !reflect.DeepEqual(received, want) || len(sent) != 0 {
		t.Fatalf("History() = %v, %v; want %v, []", received, sent, want)
	}
	received[0].Amount = 99
	if again, _ := w.History(); again[0].Amount != 1 {
		t.Fatal("History handed out the wallet's own lines")
	}
	if got := string(appendInfo(nil, &w)); got != `{"coins":1007,"inventory":[],"coinHistory":{"received":`+
		`[{"fromUser":"B","amount":1},{"fromUser":"_","amount":1},{"fromUser":"a","amount":2},`+
		`{"fromUser":"b","amount":1},{"fromUser":"c","amount":2}],"sent":[]}}` {
		t.Fatalf("appendInfo = %s", got)
	}
	// Unsorted, repeated lines from the store load sorted and merged.
	st := UserState{Coins: 1000 - 6, Sent: []Counterparty{{"z", 1}, {"m", 2}, {"z", 1}, {"a", 2}}}
	lw, err := LoadWallet(&st)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Counterparty{{"a", 2}, {"m", 2}, {"z", 2}}; !reflect.DeepEqual(lw.sent, want) {
		t.Fatalf("loaded lines %v, want %v", lw.sent, want)
	}
}
