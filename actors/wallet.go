package actors

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Wallet is one user's money, inventory and coin history: a pure state
// machine with no engine, clock or I/O. It distinguishes durable state (what
// PostgreSQL holds) from reservations (changes journaled but not yet
// committed): validation uses the available balance, reads show durable state.
//
// A Wallet is owned by one goroutine at a time (its actor); it is not safe for
// concurrent use.
type Wallet struct {
	coins    Coins // durable balance
	reserved Coins // sum of reservations of records in flight
	items    [itemCount + 1]int64
	// Durable totals per counterparty, kept sorted by name: /api/info lists
	// them in order without sorting, and an update is a binary search.
	received []Counterparty
	sent     []Counterparty
}

// Counterparty is a history line: the total exchanged with one other user.
type Counterparty struct {
	User   string
	Amount Coins
}

// UserState is a user's durable state as loaded from the store.
type UserState struct {
	PasswordHash []byte
	Coins        Coins
	Inventory    [itemCount + 1]int64 // by ItemID; index 0 unused
	Received     []Counterparty
	Sent         []Counterparty
	// Keys are the idempotency keys this user used within the retention
	// period, with the outcome they were committed with.
	Keys []KeyedRequest
	// Folds counts the pending-credit folds applied to the user (see
	// Credit): a fold reported after the load is applied only if it is
	// newer than the state loaded.
	Folds int64
}

// NewWallet returns a new user's wallet with StartingCoins.
func NewWallet() Wallet { return Wallet{coins: StartingCoins} }

// LoadWallet builds a wallet from durable state and checks the money
// invariant: 1000 + received − sent − spent = balance, nothing negative.
func LoadWallet(st *UserState) (Wallet, error) {
	w := Wallet{coins: st.Coins, items: st.Inventory}
	for _, c := range st.Received {
		if c.Amount < 0 || c.Amount > math.MaxInt64-totalOf(w.received, c.User) {
			return Wallet{}, fmt.Errorf("actors: invariant: received %d from %q", c.Amount, c.User)
		}
		w.received = addTotal(w.received, c.User, c.Amount)
	}
	for _, c := range st.Sent {
		if c.Amount < 0 || c.Amount > math.MaxInt64-totalOf(w.sent, c.User) {
			return Wallet{}, fmt.Errorf("actors: invariant: sent %d to %q", c.Amount, c.User)
		}
		w.sent = addTotal(w.sent, c.User, c.Amount)
	}
	if err := w.check(); err != nil {
		return Wallet{}, err
	}
	return w, nil
}

func findTotal(totals []Counterparty, user string) (int, bool) {
	return slices.BinarySearchFunc(totals, user, func(c Counterparty, u string) int {
		return strings.Compare(c.User, u)
	})
}

// totalOf returns user's total, 0 when absent.
func totalOf(totals []Counterparty, user string) Coins {
	if i, found := findTotal(totals, user); found {
		return totals[i].Amount
	}
	return 0
}

// addTotal adds amount to user's line in the sorted totals.
func addTotal(totals []Counterparty, user string, amount Coins) []Counterparty {
	i, found := findTotal(totals, user)
	if found {
		totals[i].Amount += amount
		return totals
	}
	return slices.Insert(totals, i, Counterparty{User: user, Amount: amount})
}

// check verifies the money invariant of the durable state (cold path).
func (w *Wallet) check() error {
	if w.coins < 0 || w.reserved < 0 || w.reserved > w.coins {
		return fmt.Errorf("actors: invariant: balance %d, reserved %d", w.coins, w.reserved)
	}
	spent := Coins(0)
	for id := ItemID(1); id <= itemCount; id++ {
		if w.items[id] < 0 {
			return fmt.Errorf("actors: invariant: negative quantity of %s", id.Name())
		}
		if Coins(w.items[id]) > (math.MaxInt64-spent)/id.Price() {
			return fmt.Errorf("actors: invariant: value of %s overflows", id.Name())
		}
		spent += Coins(w.items[id]) * id.Price()
	}
	in, inOK := sumTotals(w.received)
	out, outOK := sumTotals(w.sent)
	// Compared as balance + sent + spent = 1000 + received, each side
	// checked for overflow, so that no wrapped sum can pass.
	if !inOK || !outOK || in > math.MaxInt64-StartingCoins || out > math.MaxInt64-spent ||
		w.coins > math.MaxInt64-out-spent || w.coins+out+spent != StartingCoins+in {
		return fmt.Errorf("actors: invariant: %d + %d received - %d sent - %d spent != balance %d",
			StartingCoins, in, out, spent, w.coins)
	}
	return nil
}

// sumTotals adds history totals; ok is false when one is negative or the
// sum overflows.
func sumTotals(totals []Counterparty) (sum Coins, ok bool) {
	for _, c := range totals {
		a := c.Amount
		if a < 0 || a > math.MaxInt64-sum {
			return sum, false
		}
		sum += a
	}
	return sum, true
}

// Coins returns the durable balance.
func (w *Wallet) Coins() Coins { return w.coins }

// Available returns the balance that new changes may reserve.
func (w *Wallet) Available() Coins { return w.coins - w.reserved }

// Quantity returns the durable quantity of an item.
func (w *Wallet) Quantity(id ItemID) int64 {
	if !id.Valid() {
		return 0
	}
	return w.items[id]
}

// Reserve holds amount for a change about to be journaled.
func (w *Wallet) Reserve(amount Coins) error {
	if amount <= 0 {
		return ErrBadAmount
	}
	if amount > w.Available() {
		return ErrInsufficientCoins
	}
	w.reserved += amount
	return nil
}

// ReserveItem holds the price of an item about to be bought.
func (w *Wallet) ReserveItem(id ItemID) error {
	if !id.Valid() {
		return ErrUnknownItem
	}
	return w.Reserve(id.Price())
}

// Release drops a reservation whose record did not commit.
func (w *Wallet) Release(amount Coins) {
	if amount < 0 {
		panic("actors: invariant: negative release")
	}
	w.reserved -= amount
	if w.reserved < 0 {
		panic("actors: invariant: negative reservation")
	}
}

// ApplyPurchase makes a reserved purchase durable.
func (w *Wallet) ApplyPurchase(id ItemID) {
	price := id.Price()
	w.settle(price)
	w.items[id]++
}

// ApplySent makes a reserved transfer to user durable.
func (w *Wallet) ApplySent(user string, amount Coins) {
	w.settle(amount)
	w.sent = addTotal(w.sent, user, amount)
}

func (w *Wallet) settle(amount Coins) {
	if amount <= 0 || amount > w.reserved {
		panic("actors: invariant: settling more than reserved")
	}
	w.reserved -= amount
	w.coins -= amount
	if w.coins < 0 {
		panic("actors: invariant: negative balance")
	}
}

// ApplyReceived credits a committed transfer from user. The total of all
// balances is bounded by 1000 × users, so overflow means corrupted input.
func (w *Wallet) ApplyReceived(user string, amount Coins) error {
	if amount <= 0 {
		return ErrBadAmount
	}
	if amount > math.MaxInt64-w.coins {
		return ErrBadAmount
	}
	w.coins += amount
	w.received = addTotal(w.received, user, amount)
	return nil
}

// History returns copies of the durable totals, sorted by user name.
func (w *Wallet) History() (received, sent []Counterparty) {
	return slices.Clone(w.received), slices.Clone(w.sent)
}
