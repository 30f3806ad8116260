package actorstest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"

	"merch/actors"
)

// inventory is actors.UserState's inventory array (its length is not
// exported).
type inventory = [len(actors.UserState{}.Inventory)]int64

// row is the store's row set for one user.
type row struct {
	hash     []byte
	coins    actors.Coins
	inv      inventory
	received map[string]actors.Coins
	sent     map[string]actors.Coins
	keys     []actors.KeyedRequest
	folds    int64 // pending-credit folds applied
}

// pendingCredit is a TransferredOut's credit, waiting for a Folded record
// of its receiver's shard.
type pendingCredit struct {
	from, to string
	amount   actors.Coins
}

// Store is an in-memory actors.Store. Journals commit records to it with
// Apply the way persist commits them to PostgreSQL, so a user reloaded
// after passivation sees every committed change. Safe for concurrent use.
type Store struct {
	mu            sync.Mutex
	users         map[string]*row
	loads         map[string]int
	loadErr       map[string]error
	downErr       error           // every LoadUser and KeyApplied, when not nil
	keyErr        error           // KeyApplied, when not nil
	gate          <-chan struct{} // when not nil, LoadUser waits for it to close
	violations    []string        // records the database would have refused
	keyChecks     int             // KeyApplied calls
	registrations map[string]int  // Registered records applied, per name
	pending       []pendingCredit // TransferredOut credits not folded yet
	changes       Notifier        // notified after every LoadUser entry and Apply
}

var _ actors.Store = (*Store)(nil)

// NewStore returns a store holding users, each with actors.StartingCoins
// and the password hash "hash:" + name.
func NewStore(users ...string) *Store {
	s := &Store{users: make(map[string]*row), loads: make(map[string]int),
		loadErr: make(map[string]error), registrations: make(map[string]int)}
	for _, u := range users {
		s.users[u] = &row{hash: []byte("hash:" + u), coins: actors.StartingCoins}
	}
	return s
}

// MustStore is NewStore that fails tb at cleanup with every record that
// broke a database constraint.
func MustStore(tb testing.TB, users ...string) *Store {
	tb.Helper()
	s := NewStore(users...)
	tb.Cleanup(func() {
		for _, v := range s.Violations() {
			tb.Errorf("store: constraint violated: %s", v)
		}
	})
	return s
}

// Put stores st as name's durable state, as is (it may break the money
// invariant, which LoadWallet checks).
func (s *Store) Put(name string, st actors.UserState) {
	u := &row{hash: st.PasswordHash, coins: st.Coins, inv: st.Inventory,
		received: map[string]actors.Coins{}, sent: map[string]actors.Coins{},
		keys: append([]actors.KeyedRequest(nil), st.Keys...)}
	for _, c := range st.Received {
		u.received[c.User] += c.Amount
	}
	for _, c := range st.Sent {
		u.sent[c.User] += c.Amount
	}
	s.mu.Lock()
	s.users[name] = u
	s.mu.Unlock()
}

// Delete removes name's rows, as if the user never existed.
func (s *Store) Delete(name string) {
	s.mu.Lock()
	delete(s.users, name)
	s.mu.Unlock()
}

// LoadUser implements actors.Store: it counts the call, waits for the gate
// (or ctx), then answers the error set for name, ErrUnknownUser, or the
// state with at most actors.KeysPerUserMax of the most recent keys.
func (s *Store) LoadUser(ctx context.Context, name string) (actors.UserState, error) {
	s.mu.Lock()
	s.loads[name]++
	gate := s.gate
	s.mu.Unlock()
	s.changes.Notify()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return actors.UserState{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.downErr; err != nil {
		return actors.UserState{}, err
	}
	if err := s.loadErr[name]; err != nil {
		return actors.UserState{}, err
	}
	u := s.users[name]
	if u == nil {
		return actors.UserState{}, actors.ErrUnknownUser
	}
	return u.state(), nil
}

// KeyApplied implements actors.Store: whether user committed a change under
// key (every stored key is live).
func (s *Store) KeyApplied(_ context.Context, user, key string) (actors.KeyedRequest, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keyChecks++
	if s.downErr != nil {
		return actors.KeyedRequest{}, false, s.downErr
	}
	if s.keyErr != nil {
		return actors.KeyedRequest{}, false, s.keyErr
	}
	if u := s.users[user]; u != nil {
		if k, ok := u.key(key); ok {
			return k, true, nil
		}
	}
	return actors.KeyedRequest{}, false, nil
}

func (u *row) key(key string) (actors.KeyedRequest, bool) {
	for _, k := range u.keys {
		if k.Key == key {
			return k, true
		}
	}
	return actors.KeyedRequest{}, false
}

// state is what LoadUser returns: like persist, at most the KeysPerUserMax
// most recent keys.
func (u *row) state() actors.UserState {
	keys := u.keys[max(0, len(u.keys)-actors.KeysPerUserMax):]
	return actors.UserState{PasswordHash: u.hash, Coins: u.coins, Inventory: u.inv,
		Received: totals(u.received), Sent: totals(u.sent), Keys: append([]actors.KeyedRequest(nil), keys...),
		Folds: u.folds}
}

// UserExists implements actors.Names.
func (s *Store) UserExists(_ context.Context, name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.downErr != nil {
		return false, s.downErr
	}
	return s.users[name] != nil, nil
}

// Pending returns the credits not folded yet, summed.
func (s *Store) Pending() actors.Coins {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum actors.Coins
	for _, p := range s.pending {
		sum += p.amount
	}
	return sum
}

func totals(m map[string]actors.Coins) []actors.Counterparty {
	out := make([]actors.Counterparty, 0, len(m))
	for u, a := range m {
		out = append(out, actors.Counterparty{User: u, Amount: a})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}

// State returns name's stored state, every key included; ok is false for
// an unknown user. It does not count as a load.
func (s *Store) State(name string) (st actors.UserState, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[name]
	if u == nil {
		return actors.UserState{}, false
	}
	st = u.state()
	st.Keys = append([]actors.KeyedRequest(nil), u.keys...)
	return st, true
}

// LoadCount returns how many times LoadUser was called for name.
func (s *Store) LoadCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads[name]
}

// KeyChecks returns how many times KeyApplied was called.
func (s *Store) KeyChecks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keyChecks
}

// Registrations returns how many Registered records for name were applied
// (the store refuses a second one, so at most 1).
func (s *Store) Registrations(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registrations[name]
}

// SetLoadErr makes LoadUser of name answer err; nil ends it.
func (s *Store) SetLoadErr(name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.loadErr, name)
		return
	}
	s.loadErr[name] = err
}

// SetKeyErr makes KeyApplied answer err; nil ends it.
func (s *Store) SetKeyErr(err error) {
	s.mu.Lock()
	s.keyErr = err
	s.mu.Unlock()
}

// SetDown makes every LoadUser and KeyApplied answer err, as an unreachable
// database would; nil ends it.
func (s *Store) SetDown(err error) {
	s.mu.Lock()
	s.downErr = err
	s.mu.Unlock()
}

// SetGate makes every LoadUser wait, after it is counted, until gate is
// closed (or its context ends); nil opens the store again.
func (s *Store) SetGate(gate <-chan struct{}) {
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
}

// Changed returns a channel closed at the next LoadUser entry or Apply
// (for MustWait).
func (s *Store) Changed() <-chan struct{} { return s.changes.Changed() }

// Violations returns the records the database would have refused.
func (s *Store) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Apply commits one record like persist's batch does. ErrUserExists is the
// outcome of a Registered record for a taken name; a record PostgreSQL
// would refuse (a CHECK, a missing row, a live key's primary key) is a test
// failure, recorded as a violation and answered with an error. On success
// it allocates nothing once the users' history lines exist.
func (s *Store) Apply(rec *actors.Record) error {
	defer s.changes.Notify()
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[rec.User]
	if rec.Key != "" && u != nil {
		if _, live := u.key(rec.Key); live {
			return s.violation(rec, "key %q already stored", rec.Key)
		}
	}
	switch rec.Kind {
	case actors.Registered:
		if u != nil {
			return actors.ErrUserExists
		}
		if rec.Amount != actors.StartingCoins {
			return s.violation(rec, "registered with %d coins", rec.Amount)
		}
		s.users[rec.User] = &row{hash: rec.PasswordHash, coins: actors.StartingCoins}
		s.registrations[rec.User]++
		return nil
	case actors.Purchased:
		switch {
		case u == nil:
			return s.violation(rec, "unknown buyer")
		case !rec.Item.Valid() || rec.Amount != rec.Item.Price():
			return s.violation(rec, "bad item or price")
		case u.coins < rec.Amount:
			return s.violation(rec, "balance %d would go negative", u.coins)
		}
		u.coins -= rec.Amount
		u.inv[rec.Item]++
	case actors.Transferred:
		peer := s.users[rec.Peer]
		if err := s.checkTransfer(rec, u, peer); err != nil {
			return err
		}
		u.coins -= rec.Amount
		peer.coins += rec.Amount
		if u.sent == nil {
			u.sent = map[string]actors.Coins{}
		}
		if peer.received == nil {
			peer.received = map[string]actors.Coins{}
		}
		u.sent[rec.Peer] += rec.Amount
		peer.received[rec.User] += rec.Amount
	case actors.TransferredOut:
		if err := s.checkTransfer(rec, u, s.users[rec.Peer]); err != nil {
			return err
		}
		u.coins -= rec.Amount
		if u.sent == nil {
			u.sent = map[string]actors.Coins{}
		}
		u.sent[rec.Peer] += rec.Amount
		s.pending = append(s.pending, pendingCredit{from: rec.User, to: rec.Peer, amount: rec.Amount})
	case actors.Folded:
		s.fold(rec)
		return nil
	default:
		return s.violation(rec, "a kind this store does not model")
	}
	if rec.Key != "" {
		kind := rec.Kind
		if kind == actors.TransferredOut { // stored as a transfer, as persist does
			kind = actors.Transferred
		}
		u.keys = append(u.keys, actors.KeyedRequest{Key: rec.Key, Kind: kind, Item: rec.Item, Peer: rec.Peer, Amount: rec.Amount})
	}
	return nil
}

// fold applies and forgets the pending credits of rec.Shard, once, and
// reports them with each receiver's fold counter; s.mu is held.
func (s *Store) fold(rec *actors.Record) {
	kept := s.pending[:0]
	var applied []pendingCredit
	for _, p := range s.pending {
		if actors.ShardOf(p.to) == rec.Shard {
			applied = append(applied, p)
			continue
		}
		kept = append(kept, p)
	}
	s.pending = kept
	bumped := map[string]bool{}
	for _, p := range applied {
		to := s.users[p.to]
		if !bumped[p.to] {
			to.folds++
			bumped[p.to] = true
		}
		to.coins += p.amount
		if to.received == nil {
			to.received = map[string]actors.Coins{}
		}
		to.received[p.from] += p.amount
	}
	if rec.Credits != nil {
		for _, p := range applied {
			*rec.Credits = append(*rec.Credits, actors.Credit{From: p.from, To: p.to, Amount: p.amount, Folds: s.users[p.to].folds})
		}
	}
}

// violation records that the database would have refused rec; s.mu is
// held.
// checkTransfer is what PostgreSQL refuses of a transfer from u to peer
// (either side's owner): unknown users, a self transfer, a non-positive
// amount, a balance that would go negative.
func (s *Store) checkTransfer(rec *actors.Record, u, peer *row) error {
	switch {
	case u == nil || peer == nil:
		return s.violation(rec, "unknown sender or recipient")
	case rec.User == rec.Peer || rec.Amount <= 0:
		return s.violation(rec, "self transfer or bad amount")
	case u.coins < rec.Amount:
		return s.violation(rec, "balance %d would go negative", u.coins)
	}
	return nil
}

func (s *Store) violation(rec *actors.Record, format string, args ...any) error {
	v := fmt.Sprintf("%s %+v: ", rec.Kind, *rec) + fmt.Sprintf(format, args...)
	s.violations = append(s.violations, v)
	return fmt.Errorf("actorstest: store: %s", v)
}
