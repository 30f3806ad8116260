package actors

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var simSeed = flag.Int64("seed", -1, "TestSimulation: run only this seed (and trace it with -v)")

// Simulation parameters. simSeeds is the default run; -short runs fewer.
const (
	simSeeds      = 1000
	simSeedsShort = 200
	simOps        = 200
	simUsers      = 8
	simLimit      = 4 // InflightPerUserMax: small, so overload happens
	simPendingMax = 8 // beyond this many held records a step completes some
)

// TestSimulation drives the real System (engine, actors, directory,
// passivation, idempotency keys) with seeded random operations and checks
// every answer and the final state against simModel, a plain map-based
// implementation of the rules.
//
// Determinism: the test issues one operation at a time and waits until it
// is either answered or has appended its record (then it is pending and its
// caller stays parked). The journal holds every record; the seed decides
// when each completes and how. Nothing else runs: the janitor's interval is
// an hour. So the seed alone fixes every interleaving that matters.
//
// Journal behaviour chosen by the seed: Append refuses some records
// (ErrOverloaded); accepted records stay pending across later operations;
// they complete with success, ErrClosed or an injected error; and they
// complete in any order, not only in append order. The real journal
// completes in global append order, but nothing in the actors depends on
// that: a completion carries its own request (owner, item or peer, amount,
// key), committed() settles exactly that request's reservation, Wallet.settle
// only needs the amount to be within what is reserved (true for any subset of
// a user's reservations), the durable balance stays ≥ 0 for any subset
// because each debit was reserved against the available balance, and keys
// settle by name. Any order is therefore legitimate, and append order is one
// of the orders the simulation picks (a FIFO completion half of the time).
func TestSimulation(t *testing.T) {
	if *simSeed >= 0 {
		var trace func(string)
		if testing.Verbose() {
			trace = func(s string) { t.Log(s) }
		}
		stats, err := runSim(*simSeed, trace)
		if err != nil {
			t.Fatalf("seed %d: %v", *simSeed, err)
		}
		t.Logf("seed %d: %+v", *simSeed, stats)
		return
	}
	n := simSeeds
	if testing.Short() {
		n = simSeedsShort
	}
	seeds := make(chan int64)
	var (
		mu       sync.Mutex
		failures []string
		total    simStats
		failed   atomic.Bool
		wg       sync.WaitGroup
	)
	for range 4 * runtime.GOMAXPROCS(0) { // seeds wait on handoffs more than they compute
		wg.Go(func() {
			for seed := range seeds {
				stats, err := runSim(seed, nil)
				mu.Lock()
				total.add(stats)
				if err != nil {
					failed.Store(true)
					failures = append(failures, fmt.Sprintf("seed %d: %v\n\treplay: go test ./actors -run 'TestSimulation$' -seed=%d -v",
						seed, err, seed))
				}
				mu.Unlock()
			}
		})
	}
	for seed := int64(0); seed < int64(n) && !failed.Load(); seed++ {
		seeds <- seed
	}
	close(seeds)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if t.Failed() {
		return
	}
	t.Logf("%d seeds × %d ops: %+v", n, simOps, total)
	// The run must have exercised what it claims to; a change that made
	// the generator degenerate would otherwise pass silently.
	for name, v := range map[string]int{
		"commits": total.Commits, "failed completions": total.Failures, "out-of-order completions": total.Reordered,
		"refused appends": total.Refused, "overloads": total.Overloaded, "insufficient": total.Insufficient,
		"key replays": total.Replays, "key reuses": total.Reused, "keys in flight": total.InFlight,
		"passivations": total.Passivations, "registrations": total.Registered, "infos": total.Infos,
	} {
		if v == 0 {
			t.Errorf("no %s in the whole run", name)
		}
	}
}

// simStats counts what a run exercised.
type simStats struct {
	Commits, Failures, Reordered, Refused, Overloaded, Insufficient int
	Replays, Reused, InFlight, Passivations, Registered, Infos      int
}

func (s *simStats) add(o simStats) {
	s.Commits += o.Commits
	s.Failures += o.Failures
	s.Reordered += o.Reordered
	s.Refused += o.Refused
	s.Overloaded += o.Overloaded
	s.Insufficient += o.Insufficient
	s.Replays += o.Replays
	s.Reused += o.Reused
	s.InFlight += o.InFlight
	s.Passivations += o.Passivations
	s.Registered += o.Registered
	s.Infos += o.Infos
}

// simModel is the reference: the API rules, the reservation model and the
// facade's observable behaviour (residency, pins, keys), in plain maps.
type simModel struct {
	users       map[string]*simUser // every user that exists durably
	resident    map[string]bool     // users with an actor
	pins        map[string]int      // own pending records + pending credits
	own         map[string]int      // own pending records (the in-flight limit)
	activations int                 // actors spawned
	passivated  int                 // actors passivated
}

type simUser struct {
	hash     string
	coins    Coins // durable
	reserved Coins
	items    [itemCount + 1]int64
	received map[string]Coins
	sent     map[string]Coins
	keys     map[string]*simKey
}

type simKey struct {
	req     KeyedRequest
	pending bool
	err     error // the remembered answer once settled (nil: applied)
	durable bool  // committed: survives a reload
}

func newSimUser(hash string) *simUser {
	return &simUser{hash: hash, coins: StartingCoins, received: map[string]Coins{},
		sent: map[string]Coins{}, keys: map[string]*simKey{}}
}

// resolve mirrors System.resolve: an existing user becomes resident
// (loaded once); ok is false for an unknown one.
func (m *simModel) resolve(name string) bool {
	if m.users[name] == nil {
		return false
	}
	if !m.resident[name] {
		m.resident[name] = true
		m.activations++
	}
	return true
}

// replay mirrors keyTable.lookup.
func (u *simUser) replay(o KeyedRequest) (bool, error) {
	k := u.keys[o.Key]
	switch {
	case o.Key == "" || k == nil:
		return false, nil
	case k.req != o:
		return true, ErrKeyReused
	case k.pending:
		return true, ErrKeyInFlight
	}
	return true, k.err
}

// expectation is what the model predicts for an operation: an answer, or a
// record in the journal (pending).
type expectation struct {
	err     error
	pending bool
	refused bool   // the journal refused the record
	body    string // Info only
}

func (m *simModel) buy(user string, item ItemID, key string, refuse bool) expectation {
	if !item.Valid() {
		return expectation{err: ErrUnknownItem}
	}
	if !m.resolve(user) {
		return expectation{err: ErrUnknownUser}
	}
	if m.own[user] >= simLimit {
		return expectation{err: ErrOverloaded}
	}
	u := m.users[user]
	o := KeyedRequest{Key: key, Kind: Purchased, Item: item, Amount: item.Price()}
	if seen, err := u.replay(o); seen {
		return expectation{err: err}
	}
	return m.reserve(user, "", u, o, refuse)
}

func (m *simModel) send(from, to string, amount Coins, key string, refuse bool) expectation {
	switch {
	case from == to:
		return expectation{err: ErrSelfTransfer}
	case amount <= 0:
		return expectation{err: ErrBadAmount}
	case !m.resolve(from):
		return expectation{err: ErrUnknownUser}
	case m.own[from] >= simLimit:
		return expectation{err: ErrOverloaded}
	case !m.resolve(to):
		return expectation{err: ErrUnknownRecipient}
	}
	u := m.users[from]
	o := KeyedRequest{Key: key, Kind: Transferred, Peer: to, Amount: amount}
	if seen, err := u.replay(o); seen {
		return expectation{err: err}
	}
	return m.reserve(from, to, u, o, refuse)
}

// reserve validates against the available balance and, unless the journal
// refuses, leaves the change pending.
func (m *simModel) reserve(user, peer string, u *simUser, o KeyedRequest, refuse bool) expectation {
	if o.Amount > u.coins-u.reserved {
		if o.Key != "" {
			u.keys[o.Key] = &simKey{req: o, err: ErrInsufficientCoins}
		}
		return expectation{err: ErrInsufficientCoins}
	}
	if refuse {
		return expectation{err: ErrOverloaded, refused: true}
	}
	u.reserved += o.Amount
	m.pins[user]++
	m.own[user]++ // the in-flight limit counts only a user's own requests
	if peer != "" {
		m.pins[peer]++
	}
	if o.Key != "" {
		u.keys[o.Key] = &simKey{req: o, pending: true}
	}
	return expectation{pending: true}
}

// complete applies a pending change's journal outcome.
func (m *simModel) complete(p *simPending, err error) {
	u := m.users[p.user]
	u.reserved -= p.amount
	m.pins[p.user]--
	m.own[p.user]--
	if p.peer != "" {
		m.pins[p.peer]--
	}
	if p.key != "" {
		if err != nil {
			delete(u.keys, p.key)
		} else {
			k := u.keys[p.key]
			k.pending, k.durable = false, true
		}
	}
	if err != nil {
		return
	}
	u.coins -= p.amount
	if p.peer == "" {
		u.items[p.item]++
		return
	}
	u.sent[p.peer] += p.amount
	peer := m.users[p.peer]
	peer.coins += p.amount
	peer.received[p.user] += p.amount
}

func (m *simModel) info(user string) expectation {
	if !m.resolve(user) {
		return expectation{err: ErrUnknownUser}
	}
	if m.own[user] >= simLimit {
		return expectation{err: ErrOverloaded}
	}
	return expectation{body: m.users[user].infoJSON()}
}

// passivate mirrors PassivateIdle(0): every resident actor with nothing
// pinned goes; what it only remembered in memory (refusals) goes with it.
func (m *simModel) passivate() {
	for name := range m.resident {
		if m.pins[name] != 0 {
			continue
		}
		delete(m.resident, name)
		m.passivated++
		for key, k := range m.users[name].keys {
			if !k.durable {
				delete(m.users[name].keys, key)
			}
		}
	}
}

// infoJSON is the /api/info body, built independently of appendInfo.
func (u *simUser) infoJSON() string {
	var b strings.Builder
	b.WriteString(`{"coins":` + strconv.FormatInt(int64(u.coins), 10) + `,"inventory":[`)
	sep := ""
	for id := ItemID(1); id <= itemCount; id++ {
		if u.items[id] != 0 {
			fmt.Fprintf(&b, `%s{"type":%q,"quantity":%d}`, sep, id.Name(), u.items[id])
			sep = ","
		}
	}
	b.WriteString(`],"coinHistory":{"received":[`)
	writeLines(&b, u.received, "fromUser")
	b.WriteString(`],"sent":[`)
	writeLines(&b, u.sent, "toUser")
	b.WriteString(`]}}`)
	return b.String()
}

func writeLines(b *strings.Builder, m map[string]Coins, field string) {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(b, `{%q:%q,"amount":%d}`, field, n, m[n])
	}
}

// simPending is an operation whose record the journal holds.
type simPending struct {
	desc       string
	user, peer string
	item       ItemID
	amount     Coins
	key        string
	done       <-chan error
}

// sim is one seeded run.
type sim struct {
	seed    int64
	rng     *rand.Rand
	store   TestStore
	journal TestJournal
	metrics *fakeMetrics
	sys     *System
	model   simModel
	names   []string // existing at the start, plus "ghost" who never exists
	pending []*simPending
	stats   simStats
	step    int
	keyed   []func() error // keyed operations issued so far, to repeat
	recent  []string
	trace   func(string)
}

func runSim(seed int64, trace func(string)) (simStats, error) {
	s := &sim{seed: seed, rng: rand.New(rand.NewPCG(uint64(seed), 0x5eed)), trace: trace}
	for i := range simUsers {
		s.names = append(s.names, fmt.Sprintf("u%d", i))
	}
	s.store = Fakes.NewStore(s.names...)
	s.journal = Fakes.NewJournal(s.store, 1) // no writer: only the simulation completes records
	s.journal.SetHold(true)
	s.metrics = newFakeMetrics()
	engine, err := newEngine()
	if err != nil {
		return s.stats, err
	}
	s.sys, err = NewSystem(Config{Engine: engine, Journal: s.journal, Store: s.store, Metrics: s.metrics,
		InboxSize: 4, InflightPerUserMax: simLimit, IdleTTL: time.Hour, SweepInterval: time.Hour,
		LoadTimeout: failAfter, WriteTimeout: failAfter, ReadTimeout: failAfter})
	if err != nil {
		return s.stats, err
	}
	defer s.sys.Close()
	s.model = simModel{users: map[string]*simUser{}, resident: map[string]bool{}, pins: map[string]int{},
		own: map[string]int{}}
	for _, n := range s.names {
		s.model.users[n] = newSimUser("hash:" + n)
	}
	s.names = append(s.names, "ghost")
	for s.step = 0; s.step < simOps; s.step++ {
		if err := s.randomStep(); err != nil {
			return s.stats, s.failure(err)
		}
		if err := s.checkGauges(); err != nil {
			return s.stats, s.failure(err)
		}
	}
	if err := s.finish(); err != nil {
		return s.stats, s.failure(err)
	}
	return s.stats, nil
}

func (s *sim) failure(err error) error {
	return fmt.Errorf("step %d: %w\n\tlast operations:\n\t\t%s", s.step, err, strings.Join(s.recent, "\n\t\t"))
}

func (s *sim) log(format string, args ...any) string {
	line := fmt.Sprintf("%3d ", s.step) + fmt.Sprintf(format, args...)
	if s.trace != nil {
		s.trace(line)
	}
	s.recent = append(s.recent, line)
	if len(s.recent) > 12 {
		s.recent = s.recent[1:]
	}
	return line
}

func (s *sim) user() string {
	if s.rng.IntN(20) == 0 {
		return "ghost"
	}
	names := s.existing()
	return names[s.rng.IntN(len(names))]
}

// existing lists the model's users in a fixed order.
func (s *sim) existing() []string {
	names := make([]string, 0, len(s.model.users))
	for n := range s.model.users {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (s *sim) key() string {
	if s.rng.IntN(10) < 3 {
		return fmt.Sprintf("k%d", s.rng.IntN(4))
	}
	return ""
}

func (s *sim) randomStep() error {
	if len(s.pending) >= simPendingMax {
		return s.completeSome()
	}
	switch r := s.rng.IntN(100); {
	case r < 8 && len(s.keyed) > 0: // a client retrying with its key
		return s.keyed[s.rng.IntN(len(s.keyed))]()
	case r < 30:
		user, item, key := s.user(), ItemID(1+s.rng.IntN(itemCount)), s.key()
		if s.rng.IntN(25) == 0 {
			item = ItemID(s.rng.IntN(2) * (itemCount + 1)) // 0 or 11
		}
		if key != "" {
			s.keyed = append(s.keyed, func() error { return s.buy(user, item, key) })
		}
		return s.buy(user, item, key)
	case r < 58:
		from, to, key := s.user(), s.user(), s.key()
		amount := Coins(1 + s.rng.IntN(60))
		switch s.rng.IntN(12) {
		case 0:
			amount = Coins(s.rng.IntN(1300))
		case 1:
			amount = -Coins(s.rng.IntN(3))
		}
		if key != "" {
			s.keyed = append(s.keyed, func() error { return s.send(from, to, amount, key) })
		}
		return s.send(from, to, amount, key)
	case r < 70:
		return s.info(s.user())
	case r < 88:
		return s.completeSome()
	case r < 92:
		return s.passivate()
	case r < 96:
		names := append(s.existing(), "n0", "n1", "n2")
		return s.register(names[s.rng.IntN(len(names))])
	default:
		return s.lookup(s.user())
	}
}

// run calls fn. When the model expects a record (pending), fn runs on its
// own goroutine and run waits until it answers or appends a record; a call
// that appended is returned as its done channel. Otherwise fn is called
// directly (cheaper); if it appends after all, it blocks until its write
// timeout and the mismatch is reported.
func (s *sim) run(pending bool, fn func() error) (err error, done <-chan error, _ error) {
	before := s.journal.HeldCount()
	if !pending {
		err := fn()
		if s.journal.HeldCount() != before {
			return nil, nil, fmt.Errorf("journaled a record and answered %s; want an answer only", errText(err))
		}
		return err, nil, nil
	}
	changed := s.journal.Changed()
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	timer := time.NewTimer(failAfter)
	defer timer.Stop()
	for {
		select {
		case err := <-ch:
			return err, nil, nil
		case <-changed:
			changed = s.journal.Changed()
			if s.journal.HeldCount() > before {
				return nil, ch, nil
			}
		case <-timer.C:
			return nil, nil, errors.New("operation neither answered nor journaled")
		}
	}
}

// setRefuse decides whether the next Append fails with ErrOverloaded.
func (s *sim) setRefuse(refuse bool) {
	if refuse {
		s.journal.SetRefuse(func(*Record) error { return ErrOverloaded })
	} else {
		s.journal.SetRefuse(nil)
	}
}

// check compares an operation's outcome with the expectation.
func (s *sim) check(desc string, exp expectation, got error, done <-chan error) error {
	if exp.pending != (done != nil) {
		return fmt.Errorf("%s: journaled = %v, want %v (answer %s, want %s)", desc, done != nil, exp.pending,
			errText(got), errText(exp.err))
	}
	if !sameErr(got, exp.err) {
		return fmt.Errorf("%s = %s, want %s", desc, errText(got), errText(exp.err))
	}
	switch {
	case errors.Is(exp.err, ErrOverloaded):
		s.stats.Overloaded++
	case errors.Is(exp.err, ErrInsufficientCoins):
		s.stats.Insufficient++
	case errors.Is(exp.err, ErrKeyReused):
		s.stats.Reused++
	case errors.Is(exp.err, ErrKeyInFlight):
		s.stats.InFlight++
	}
	return nil
}

// sameErr: both nil, or a is b.
func sameErr(a, b error) bool { return (a == nil) == (b == nil) && (a == nil || errors.Is(a, b)) }

// errText formats an outcome for a failure message (an outcome is data
// here, not a cause to wrap).
func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return strconv.Quote(err.Error())
}

func (s *sim) buy(user string, item ItemID, key string) error {
	refuse := s.rng.IntN(8) == 0
	desc := s.log("Buy(%s, %d, %q) refuse=%v", user, item, key, refuse)
	before := s.model.users[user].keyAnswered(key, Purchased)
	exp := s.model.buy(user, item, key, refuse)
	s.setRefuse(refuse)
	got, done, err := s.run(exp.pending, func() error { return s.sys.Buy(user, item, key) })
	if err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	if exp.refused {
		s.stats.Refused++
	}
	if before && exp.err == nil && !exp.pending {
		s.stats.Replays++
	}
	if exp.pending {
		s.pending = append(s.pending, &simPending{desc: desc, user: user, item: item, amount: item.Price(), key: key, done: done})
	}
	return s.check(desc, exp, got, done)
}

func (s *sim) send(from, to string, amount Coins, key string) error {
	refuse := s.rng.IntN(8) == 0
	desc := s.log("Send(%s → %s, %d, %q) refuse=%v", from, to, amount, key, refuse)
	before := s.model.users[from].keyAnswered(key, Transferred)
	exp := s.model.send(from, to, amount, key, refuse)
	s.setRefuse(refuse)
	got, done, err := s.run(exp.pending, func() error { return s.sys.Send(from, to, amount, key) })
	if err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	if exp.refused {
		s.stats.Refused++
	}
	if before && exp.err == nil && !exp.pending {
		s.stats.Replays++
	}
	if exp.pending {
		s.pending = append(s.pending, &simPending{desc: desc, user: from, peer: to, amount: amount, key: key, done: done})
	}
	return s.check(desc, exp, got, done)
}

// keyAnswered reports whether key already has an answer at u (for stats).
func (u *simUser) keyAnswered(key string, kind RecordKind) bool {
	if u == nil || key == "" {
		return false
	}
	k := u.keys[key]
	return k != nil && !k.pending && k.req.Kind == kind
}

func (s *sim) info(user string) error {
	desc := s.log("Info(%s)", user)
	exp := s.model.info(user)
	var body []byte
	got, done, err := s.run(false, func() error {
		var err error
		body, err = s.sys.Info(user)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	if err := s.check(desc, exp, got, done); err != nil {
		return err
	}
	if exp.err == nil {
		s.stats.Infos++
		if string(body) != exp.body {
			return fmt.Errorf("%s =\n\t%s\nwant\n\t%s", desc, body, exp.body)
		}
	}
	return nil
}

func (s *sim) lookup(user string) error {
	desc := s.log("Lookup(%s)", user)
	ok := s.model.resolve(user)
	var acc Account
	got, done, err := s.run(false, func() error {
		var err error
		acc, err = s.sys.Lookup(user)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	exp := expectation{}
	if !ok {
		exp.err = ErrUnknownUser
	}
	if err := s.check(desc, exp, got, done); err != nil {
		return err
	}
	if ok && string(acc.PasswordHash()) != s.model.users[user].hash {
		return fmt.Errorf("%s: hash %q, want %q", desc, acc.PasswordHash(), s.model.users[user].hash)
	}
	return nil
}

// register runs a registration; the journal completes its record at once
// (a registration in flight would park every request for that name).
func (s *sim) register(name string) error {
	refuse := s.rng.IntN(6) == 0
	var fail error
	if s.rng.IntN(6) == 0 {
		fail = ErrClosed
	}
	desc := s.log("Register(%s) refuse=%v fail=%v", name, refuse, fail)
	hash := fmt.Sprintf("h%d/%d", s.seed, s.step)
	s.setRefuse(refuse)
	journaled := !s.model.resident[name] && !refuse
	got, done, err := s.run(journaled, func() error { return s.sys.Register(name, []byte(hash)) })
	if err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	exists := s.model.users[name] != nil
	switch {
	case s.model.resident[name]:
		return s.check(desc, expectation{err: ErrUserExists}, got, done)
	case refuse:
		return s.check(desc, expectation{err: ErrOverloaded}, got, done)
	case done == nil:
		return fmt.Errorf("%s = %s without a record", desc, errText(got))
	}
	s.journal.CompleteHeld(s.journal.HeldCount()-1, fail)
	got, err = s.wait(done)
	if err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	want := fail
	if want == nil && exists {
		want = ErrUserExists
	}
	if !sameErr(got, want) {
		return fmt.Errorf("%s = %s, want %s", desc, errText(got), errText(want))
	}
	if want == nil {
		s.model.users[name] = newSimUser(hash)
		s.model.resident[name] = true
		s.model.activations++
		s.stats.Registered++
	}
	return nil
}

func (s *sim) wait(done <-chan error) (error, error) {
	timer := time.NewTimer(failAfter)
	defer timer.Stop()
	select {
	case err := <-done:
		return err, nil
	case <-timer.C:
		return nil, errors.New("no answer after the record completed")
	}
}

// completeSome completes one to three held records, each either the oldest
// (as the real journal would) or any, each committed or failed.
func (s *sim) completeSome() error {
	for n := 1 + s.rng.IntN(3); n > 0 && len(s.pending) > 0; n-- {
		i := 0
		if s.rng.IntN(2) == 0 {
			i = s.rng.IntN(len(s.pending))
		}
		var fail error
		switch s.rng.IntN(20) {
		case 0, 1:
			fail = ErrClosed
		case 2:
			fail = errInjected
		}
		if err := s.complete(i, fail); err != nil {
			return err
		}
	}
	return nil
}

func (s *sim) complete(i int, fail error) error {
	p := s.pending[i]
	s.pending = append(s.pending[:i], s.pending[i+1:]...)
	desc := s.log("complete #%d (%s) with %v", i, p.desc, fail)
	rec := s.journal.CompleteHeld(i, fail)
	if rec.User != p.user || rec.Peer != p.peer || rec.Amount != p.amount || rec.Key != p.key ||
		(p.peer == "" && (rec.Kind != Purchased || rec.Item != p.item)) || (p.peer != "" && rec.Kind != Transferred) {
		return fmt.Errorf("%s: record %+v", desc, *rec)
	}
	got, err := s.wait(p.done)
	if err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	s.model.complete(p, fail)
	if fail == nil {
		s.stats.Commits++
	} else {
		s.stats.Failures++
	}
	if i > 0 {
		s.stats.Reordered++
	}
	if !sameErr(got, fail) {
		return fmt.Errorf("%s: answer %s, want %s", desc, errText(got), errText(fail))
	}
	return nil
}

func (s *sim) passivate() error {
	s.log("PassivateIdle(0)")
	s.model.passivate()
	s.stats.Passivations++
	if n := s.sys.PassivateIdle(0); n != int64(len(s.model.resident)) {
		return fmt.Errorf("PassivateIdle left %d resident, want %d", n, len(s.model.resident))
	}
	return nil
}

// checkGauges runs after every step: nothing queued, the expected actors
// resident, activations and passivations as the model counts them.
func (s *sim) checkGauges() error {
	st := s.sys.Stats()
	switch {
	case st.MailboxDepth != 0 || st.MailboxDepthMax != 0:
		return fmt.Errorf("mailboxes not empty between steps: %+v", st)
	case st.Active != int64(len(s.model.resident)):
		return fmt.Errorf("%d active actors, want %d", st.Active, len(s.model.resident))
	case s.metrics.activated.Load() != int64(s.model.activations):
		return fmt.Errorf("%d activations, want %d", s.metrics.activated.Load(), s.model.activations)
	case s.metrics.passivated.Load() != int64(s.model.passivated):
		return fmt.Errorf("%d passivations, want %d", s.metrics.passivated.Load(), s.model.passivated)
	}
	return nil
}

// finish completes everything still held, then compares every user's info,
// the store and the money total with the model.
func (s *sim) finish() error {
	for len(s.pending) > 0 {
		if err := s.completeSome(); err != nil {
			return err
		}
	}
	var total Coins
	for _, name := range s.existing() {
		if err := s.info(name); err != nil {
			return err
		}
		u := s.model.users[name]
		st, ok := s.store.State(name)
		if !ok {
			return fmt.Errorf("store lost %s", name)
		}
		if st.Coins != u.coins || st.Inventory != u.items || string(st.PasswordHash) != u.hash ||
			!sameTotals(totalsMap(st.Received), u.received) || !sameTotals(totalsMap(st.Sent), u.sent) {
			return fmt.Errorf("store has %s = %+v, model %+v", name, st, *u)
		}
		if u.reserved != 0 {
			return fmt.Errorf("model: %s still reserves %d", name, u.reserved)
		}
		var keys []string
		for k, sk := range u.keys {
			if sk.durable {
				keys = append(keys, k)
			}
		}
		var stored []string
		for _, k := range st.Keys {
			stored = append(stored, k.Key)
		}
		sort.Strings(keys)
		sort.Strings(stored)
		if strings.Join(keys, ",") != strings.Join(stored, ",") {
			return fmt.Errorf("%s: stored keys %v, model %v", name, stored, keys)
		}
		total += u.coins
		for id := ItemID(1); id <= itemCount; id++ {
			total += Coins(u.items[id]) * id.Price()
		}
	}
	if want := StartingCoins * Coins(len(s.model.users)); total != want {
		return fmt.Errorf("money not conserved: %d, want %d", total, want)
	}
	if v := s.store.Violations(); len(v) > 0 {
		return fmt.Errorf("store constraints violated: %v", v)
	}
	return s.checkGauges()
}
