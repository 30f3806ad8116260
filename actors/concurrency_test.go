package actors

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// ledger is what clients learned from successful replies: every 2xx is a
// change that must be in the final state, exactly once.
type ledger struct {
	bought    map[string]*[itemCount + 1]int64
	sent      map[[2]string]Coins // {from, to} → total
	transfers int
}

func newLedger() *ledger {
	return &ledger{bought: map[string]*[itemCount + 1]int64{}, sent: map[[2]string]Coins{}}
}

func (l *ledger) buy(user string, id ItemID) {
	if l.bought[user] == nil {
		l.bought[user] = new([itemCount + 1]int64)
	}
	l.bought[user][id]++
}

func (l *ledger) merge(o *ledger) {
	for u, items := range o.bought {
		for id, n := range items {
			for range n {
				l.buy(u, ItemID(id))
			}
		}
	}
	for k, a := range o.sent {
		l.sent[k] += a
	}
	l.transfers += o.transfers
}

// want returns the state the ledger implies for user.
func (l *ledger) want(user string) want {
	w := want{coins: StartingCoins, items: map[ItemID]int64{}, received: map[string]Coins{}, sent: map[string]Coins{}}
	if items := l.bought[user]; items != nil {
		for id := ItemID(1); id <= itemCount; id++ {
			if items[id] > 0 {
				w.items[id] = items[id]
				w.coins -= Coins(items[id]) * id.Price()
			}
		}
	}
	for k, a := range l.sent {
		if k[0] == user {
			w.sent[k[1]] += a
			w.coins -= a
		}
		if k[1] == user {
			w.received[k[0]] += a
			w.coins += a
		}
	}
	return w
}

// TestConcurrentStorm runs buys, transfers (opposite-direction pairs and a
// hot receiver included) and reads from many goroutines while actors are
// passivated and reloaded underneath, through a journal that commits
// asynchronously in batches. Afterwards money is conserved, nothing is
// negative, every success is applied exactly once, and memory, store and
// clients agree.
func TestConcurrentStorm(t *testing.T) {
	const (
		users      = 12
		goroutines = 32
	)
	opsPer := 400
	if testing.Short() {
		opsPer = 100
	}
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("u%02d", i)
	}
	cfg := testConfig()
	cfg.InflightPerUserMax = 16
	e := mustNewEnv(t, cfg, liveJournal, names...)
	events := mustEventLog(t, e.engine)

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		total   = newLedger()
		refused = map[error]int{}
	)
	passivate := make(chan struct{}, 1)
	passivatorDone := make(chan struct{})
	go func() {
		defer close(passivatorDone)
		for range passivate {
			e.sys.PassivateIdle(0)
			_ = e.sys.Stats()
		}
	}()
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 42))
			local := newLedger()
			seen := map[error]int{}
			for i := range opsPer {
				if i%25 == 0 {
					select {
					case passivate <- struct{}{}:
					default:
					}
				}
				var err error
				from, to := names[rng.IntN(users)], names[rng.IntN(users)]
				amount := Coins(1 + rng.IntN(20))
				switch op := rng.IntN(100); {
				case g < 8: // storms: u00 ⇄ u01, u02 ⇄ u03, both ways at once
					pair := g / 2 * 2
					from, to = names[pair+g%2], names[pair+1-g%2]
					if op < 10 {
						from, to = to, from
					}
					err = e.sys.Send(from, to, amount, "")
				case g < 12: // a hot receiver
					if from == names[11] {
						from = names[10]
					}
					to = names[11]
					err = e.sys.Send(from, to, amount, "")
				case op < 6:
					item := []ItemID{pen, socks, cup, book}[rng.IntN(4)]
					if err = e.sys.Buy(from, item, ""); err == nil {
						local.buy(from, item)
					}
					from = ""
				case op < 16:
					var body []byte
					if body, err = e.sys.Info(from); err == nil {
						var w Wallet
						mustMatchWalletLoose(t, body, &w)
					}
					from = ""
				default:
					if from == to {
						to = names[(rng.IntN(users-1)+1+indexOf(names, from))%users]
					}
					err = e.sys.Send(from, to, amount, "")
				}
				switch {
				case err == nil && from != "":
					local.sent[[2]string{from, to}] += amount
					local.transfers++
				case err == nil:
				case errors.Is(err, ErrInsufficientCoins), errors.Is(err, ErrOverloaded),
					errors.Is(err, ErrUnavailable):
					seen[err]++ // refused; nothing changed
				default:
					t.Errorf("goroutine %d op %d: %v", g, i, err)
					return
				}
			}
			mu.Lock()
			total.merge(local)
			for k, n := range seen {
				refused[k] += n
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	close(passivate)
	<-passivatorDone
	if t.Failed() {
		return
	}
	transfers, bought := total.transfers, 0
	for _, items := range total.bought {
		for _, n := range items {
			bought += int(n)
		}
	}
	t.Logf("transfers %d, items bought %d, refused %v, passivations %d",
		transfers, bought, refused, e.metrics.passivated.Load())
	if transfers < goroutines*opsPer/4 || bought < 20 || len(total.sent) < users {
		t.Fatalf("too few successes to mean anything: %d transfers, %d items", transfers, bought)
	}
	if appends, completed := e.journal.Counts(); appends != completed {
		t.Fatalf("%d records appended, %d completed", appends, completed)
	}
	e.mustQuiet(t)
	mustConserved(t, e.store, names)
	for _, u := range names {
		e.mustSee(t, u, total.want(u))
	}
	mustPairsAgree(t, e.store, names)
	e.mustQuiet(t)
	events.mustNone(t)
}

func indexOf(names []string, name string) int {
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}

// mustMatchWalletLoose decodes an info body and checks its shape and money
// invariant only (the state is moving underneath). It may run on any
// goroutine.
func mustMatchWalletLoose(tb testing.TB, body []byte, w *Wallet) {
	tb.Helper()
	st, err := Fakes.InfoState(body)
	if err != nil {
		tb.Errorf("info %s: %v", body, err)
		return
	}
	if *w, err = LoadWallet(&st); err != nil {
		tb.Errorf("info %s breaks the invariant: %v", body, err)
	}
}

// mustConserved checks Σ balances + Σ inventory value = 1000 × users and
// that nothing is negative, in the store.
func mustConserved(tb testing.TB, store TestStore, names []string) {
	tb.Helper()
	var sum Coins
	for _, u := range names {
		st, ok := store.State(u)
		if !ok {
			tb.Fatalf("store lost %s", u)
		}
		if st.Coins < 0 {
			tb.Fatalf("%s has a negative balance %d", u, st.Coins)
		}
		sum += st.Coins
		for id := ItemID(1); id <= itemCount; id++ {
			if st.Inventory[id] < 0 {
				tb.Fatalf("%s has %d of %s", u, st.Inventory[id], id.Name())
			}
			sum += Coins(st.Inventory[id]) * id.Price()
		}
		if _, err := LoadWallet(&st); err != nil {
			tb.Fatalf("%s: %v", u, err)
		}
	}
	if want := StartingCoins * Coins(len(names)); sum != want {
		tb.Fatalf("money not conserved: Σ balances + Σ inventory = %d, want %d", sum, want)
	}
}

// mustPairsAgree checks that what A sent to B is what B received from A.
func mustPairsAgree(tb testing.TB, store TestStore, names []string) {
	tb.Helper()
	sent, received := map[[2]string]Coins{}, map[[2]string]Coins{}
	for _, u := range names {
		st, _ := store.State(u)
		for _, c := range st.Sent {
			sent[[2]string{u, c.User}] += c.Amount
		}
		for _, c := range st.Received {
			received[[2]string{c.User, u}] += c.Amount
		}
	}
	if !sameTotals2(sent, received) {
		tb.Fatalf("sent %v\nreceived %v", sent, received)
	}
}

func sameTotals2(a, b map[[2]string]Coins) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
