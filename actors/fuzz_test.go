package actors

import (
	"encoding/binary"
	"errors"
	"testing"
)

// walletModel is the reference: the rules of docs/API.md written as plainly as
// possible, with no reservations cleverness shared with Wallet.
type walletModel struct {
	coins    int64
	pending  []pendingOp
	items    map[ItemID]int64
	received map[string]int64
	sent     map[string]int64
}

type pendingOp struct {
	item   ItemID // 0 for a transfer
	to     string
	amount int64
}

func (m *walletModel) available() int64 {
	a := m.coins
	for _, p := range m.pending {
		a -= p.amount
	}
	return a
}

var fuzzNames = []string{"ann", "bob", "cid", "dee"}

// FuzzWallet drives a Wallet with random operation sequences and checks it
// against the reference model after every step, plus the money invariant.
// Each step reads 3 bytes: op, argument, argument.
func FuzzWallet(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 0, 0})                            // reserve t-shirt, commit
	f.Add([]byte{1, 0x03, 0xe8, 2, 0, 0, 4, 1, 5})             // send 1000, commit, receive
	f.Add([]byte{0, 10, 0, 0, 10, 0, 0, 10, 0, 3, 0, 2, 0, 0}) // pink-hoody ×3, release, commit
	f.Add([]byte{1, 0x80, 0x01, 1, 0, 0, 0, 11, 0, 0, 0, 0})   // negative, zero, unknown items
	f.Fuzz(func(t *testing.T, ops []byte) {
		w := NewWallet()
		m := &walletModel{coins: 1000, items: map[ItemID]int64{}, received: map[string]int64{}, sent: map[string]int64{}}
		for i := 0; i+3 <= len(ops); i += 3 {
			step(t, &w, m, ops[i], ops[i+1], ops[i+2])
			compare(t, &w, m)
		}
	})
}

func step(t *testing.T, w *Wallet, m *walletModel, op, a, b byte) {
	t.Helper()
	switch op % 5 {
	case 0: // reserve an item (ids 0 and 11 are not items)
		id := ItemID(a % 12)
		err := w.ReserveItem(id)
		var want error
		switch {
		case !id.Valid():
			want = ErrUnknownItem
		case int64(id.Price()) > m.available():
			want = ErrInsufficientCoins
		default:
			m.pending = append(m.pending, pendingOp{item: id, amount: int64(id.Price())})
		}
		mustErr(t, "ReserveItem", err, want)
	case 1: // reserve a transfer; amount is a signed 16-bit number
		amount := int64(int16(binary.BigEndian.Uint16([]byte{a, b})))
		err := w.Reserve(Coins(amount))
		var want error
		switch {
		case amount <= 0:
			want = ErrBadAmount
		case amount > m.available():
			want = ErrInsufficientCoins
		default:
			m.pending = append(m.pending, pendingOp{to: fuzzNames[b%4], amount: amount})
		}
		mustErr(t, "Reserve", err, want)
	case 2, 3: // the oldest pending record commits (2) or fails (3)
		if len(m.pending) == 0 {
			return
		}
		p := m.pending[0]
		m.pending = m.pending[1:]
		switch {
		case op%5 == 3:
			w.Release(Coins(p.amount))
		case p.item != 0:
			w.ApplyPurchase(p.item)
			m.coins -= p.amount
			m.items[p.item]++
		default:
			w.ApplySent(p.to, Coins(p.amount))
			m.coins -= p.amount
			m.sent[p.to] += p.amount
		}
	case 4: // a committed credit arrives
		amount := int64(a)<<4 | int64(b&0xf)
		err := w.ApplyReceived(fuzzNames[b%4], Coins(amount))
		var want error
		if amount <= 0 {
			want = ErrBadAmount
		} else {
			m.coins += amount
			m.received[fuzzNames[b%4]] += amount
		}
		mustErr(t, "ApplyReceived", err, want)
	}
}

func mustErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) || (want == nil) != (got == nil) {
		t.Fatalf("%s: err = %v, want %v", what, got, want)
	}
}

func compare(t *testing.T, w *Wallet, m *walletModel) {
	t.Helper()
	if int64(w.Coins()) != m.coins || int64(w.Available()) != m.available() {
		t.Fatalf("coins %d available %d, model %d %d", w.Coins(), w.Available(), m.coins, m.available())
	}
	if w.Coins() < 0 || w.Available() < 0 {
		t.Fatalf("negative: coins %d available %d", w.Coins(), w.Available())
	}
	for _, id := range Items() {
		if w.Quantity(id) != m.items[id] {
			t.Fatalf("%s: %d, model %d", id.Name(), w.Quantity(id), m.items[id])
		}
	}
	recv, sent := w.History()
	checkTotals(t, "received", recv, m.received)
	checkTotals(t, "sent", sent, m.sent)
	if err := w.check(); err != nil {
		t.Fatal(err)
	}
}

func checkTotals(t *testing.T, what string, got []Counterparty, want map[string]int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %v, model %v", what, got, want)
	}
	for i, c := range got {
		if i > 0 && got[i-1].User >= c.User {
			t.Fatalf("%s not sorted: %v", what, got)
		}
		if int64(c.Amount) != want[c.User] {
			t.Fatalf("%s %s: %d, model %d", what, c.User, c.Amount, want[c.User])
		}
	}
}
