package actors

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

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

const emptyInfo = `{"coins":1000,"inventory":[],"coinHistory":{"received":[],"sent":[]}}`

func TestAppendInfo(t *testing.T) {
	tests := []struct {
		name string
		w    Wallet
		want string
	}{
		{name: "new wallet", w: NewWallet(), want: emptyInfo},
		{name: "zero wallet", w: Wallet{},
			want: `{"coins":0,"inventory":[],"coinHistory":{"received":[],"sent":[]}}`},
		{name: "empty maps are arrays too",
			w:    Wallet{coins: 1000, received: []Counterparty{}, sent: []Counterparty{}},
			want: emptyInfo},
		{name: "reservations are not shown", w: Wallet{coins: 1000, reserved: 999}, want: emptyInfo},
		{name: "inventory in catalogue order, history sorted by user",
			w: Wallet{coins: 1000 + 36 - 160 - 10 - 40 - 500,
				items:    inv(map[ItemID]int64{pinkHoody: 1, pen: 1, cup: 2}),
				received: []Counterparty{{"Bob", 1}, {"alice", 30}, {"zed", 5}},
				sent:     []Counterparty{{"bob", 100}, {"carol", 60}}},
			want: `{"coins":326,"inventory":[{"type":"cup","quantity":2},{"type":"pen","quantity":1},` +
				`{"type":"pink-hoody","quantity":1}],"coinHistory":{"received":[{"fromUser":"Bob","amount":1},` +
				`{"fromUser":"alice","amount":30},{"fromUser":"zed","amount":5}],` +
				`"sent":[{"toUser":"bob","amount":100},{"toUser":"carol","amount":60}]}}`},
		{name: "every item",
			w: Wallet{coins: 0, items: inv(map[ItemID]int64{1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1})},
			want: `{"coins":0,"inventory":[{"type":"t-shirt","quantity":1},{"type":"cup","quantity":1},` +
				`{"type":"book","quantity":1},{"type":"pen","quantity":1},{"type":"powerbank","quantity":1},` +
				`{"type":"hoody","quantity":1},{"type":"umbrella","quantity":1},{"type":"socks","quantity":1},` +
				`{"type":"wallet","quantity":1},{"type":"pink-hoody","quantity":1}],` +
				`"coinHistory":{"received":[],"sent":[]}}`},
		{name: "names are escaped",
			w: Wallet{coins: 7, received: []Counterparty{{"q\"b\\s\x01\n", 7}}},
			want: `{"coins":7,"inventory":[],"coinHistory":{"received":[{"fromUser":"q\"b\\s\u0001\u000a",` +
				`"amount":7}],"sent":[]}}`},
		{name: "large numbers",
			w:    Wallet{coins: math.MaxInt64, items: inv(map[ItemID]int64{socks: math.MaxInt64})},
			want: `{"coins":9223372036854775807,"inventory":[{"type":"socks","quantity":9223372036854775807}],"coinHistory":{"received":[],"sent":[]}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("prefix")
			got := appendInfo(prefix, &tc.w)
			if !bytes.HasPrefix(got, []byte("prefix")) {
				t.Fatalf("dst not kept: %s", got)
			}
			got = got[len("prefix"):]
			if string(got) != tc.want {
				t.Fatalf("appendInfo =\n%s\nwant\n%s", got, tc.want)
			}
			mustMatchWallet(t, got, &tc.w)
		})
	}
}

// mustMatchWallet decodes an info body with encoding/json
// (actorstest.DecodeInfo: strict, arrays never null) and checks it against
// w: one line per item and user, history sorted by user.
func mustMatchWallet(tb testing.TB, body []byte, w *Wallet) {
	tb.Helper()
	st, err := Fakes.InfoState(body)
	if err != nil {
		tb.Fatalf("info %s: %v", body, err)
	}
	if st.Coins != w.coins {
		tb.Fatalf("coins %d, want %d", st.Coins, w.coins)
	}
	if st.Inventory != w.items {
		tb.Fatalf("inventory %v, want %v", st.Inventory, w.items)
	}
	received, sent := mustLines(tb, st.Received, body), mustLines(tb, st.Sent, body)
	if !sameTotals(received, totalsMap(w.received)) || !sameTotals(sent, totalsMap(w.sent)) {
		tb.Fatalf("history %v / %v, want %v / %v", received, sent, w.received, w.sent)
	}
}

// mustLines checks that history lines are sorted by user, one per user, and
// returns them as user → amount.
func mustLines(tb testing.TB, lines []Counterparty, body []byte) map[string]Coins {
	tb.Helper()
	m := make(map[string]Coins, len(lines))
	for i, c := range lines {
		if _, dup := m[c.User]; dup {
			tb.Fatalf("two lines for %q in %s", c.User, body)
		}
		if i > 0 && lines[i-1].User >= c.User {
			tb.Fatalf("history not sorted by user in %s", body)
		}
		m[c.User] = c.Amount
	}
	return m
}
