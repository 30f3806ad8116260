package api

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"merch/actors"
)

// TestLoginSkipsBcrypt: bcrypt runs once per resident user (to register, or
// to verify the first login of a user loaded from the store); later logins,
// right or wrong, compare the keyed digest.
func TestLoginSkipsBcrypt(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	e.store.Put("loaded", actors.UserState{PasswordHash: mustHash(t, "stored pw"), Coins: actors.StartingCoins})
	steps := []struct {
		name, user, password string
		status               int
		hashes               int64 // bcrypt runs so far
	}{
		{"register", "fresh", "pw", 200, 1},
		{"login after register", "fresh", "pw", 200, 1},
		{"login again", "fresh", "pw", 200, 1},
		{"wrong password after digest", "fresh", "nope", 401, 1},
		{"right password still works", "fresh", "pw", 200, 1},
		{"first login of a loaded user", "loaded", "stored pw", 200, 2},
		{"second login of a loaded user", "loaded", "stored pw", 200, 2},
		{"wrong password of a loaded user", "loaded", "stored", 401, 2},
		{"new name registers with bcrypt", "other", "x", 200, 3},
	}
	e.store.Put("cold", actors.UserState{PasswordHash: mustHash(t, "cold pw"), Coins: actors.StartingCoins})
	steps = append(steps, []struct {
		name, user, password string
		status               int
		hashes               int64
	}{
		{"wrong password, no digest yet", "cold", "warm pw", 401, 4},
		{"wrong again still needs bcrypt", "cold", "hot pw", 401, 5},
		{"right password", "cold", "cold pw", 200, 6},
		{"then digest only", "cold", "cold pw", 200, 6},
	}...)
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := e.do(t, req{method: "POST", path: "/api/auth", body: authBody(s.user, s.password)})
			checkReply(t, r, s.status, "")
			if got := e.hashes.Load(); got != s.hashes {
				t.Fatalf("%d bcrypt runs, want %d", got, s.hashes)
			}
		})
	}
}

// TestBruteForceLimiter: after failuresMax wrong passwords a name is locked
// (429, even with the right password) until the window ends; other names are
// not affected.
func TestBruteForceLimiter(t *testing.T) {
	t.Parallel()
	const failuresMax = 3
	window := 1500 * time.Millisecond // wall clock; the steps below take a few ms
	e := mustEnv(t, envConfig{failuresMax: failuresMax, window: window})
	e.mustAuth(t, "victim", "right")
	e.mustAuth(t, "bystander", "pw")
	steps := []struct {
		name, user, password string
		status               int
	}{
		{"wrong 1", "victim", "guess1", 401},
		{"wrong 2", "victim", "guess2", 401},
		{"wrong 3", "victim", "guess3", 401},
		{"locked: wrong", "victim", "guess4", 429},
		{"locked: right password", "victim", "right", 429},
		{"other user unaffected", "bystander", "pw", 200},
		{"still locked", "victim", "right", 429},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := e.do(t, req{method: "POST", path: "/api/auth", body: authBody(s.user, s.password)})
			checkReply(t, r, s.status, "")
		})
	}
	// Polling only waits for the window to pass; every answer until then
	// must be 429.
	var last reply
	waitFor(t, "the lockout window to end", func() bool {
		last = e.do(t, req{method: "POST", path: "/api/auth", body: authBody("victim", "right")})
		if last.status != 200 && last.status != 429 {
			t.Fatalf("while locked: %d %s", last.status, last.body)
		}
		return last.status == 200
	})
	// A new window: one wrong password is a plain 401 again.
	checkReply(t, e.do(t, req{method: "POST", path: "/api/auth", body: authBody("victim", "guess5")}), 401, "wrong password")
}

// TestLimiterUnit covers the limiter's counting without HTTP: per (name,
// address), the looser per-name ceiling, IPv6 by /64.
func TestLimiterUnit(t *testing.T) {
	for _, c := range []LimiterConfig{
		{FailuresMax: 0, NameFailuresMax: 1, Window: time.Second, NamesMax: 1},
		{FailuresMax: 2, NameFailuresMax: 1, Window: time.Second, NamesMax: 1},
		{FailuresMax: 1, NameFailuresMax: 1, Window: 0, NamesMax: 1},
		{FailuresMax: 1, NameFailuresMax: 1, Window: time.Second, NamesMax: 0},
	} {
		if _, err := NewLimiter(c); err == nil {
			t.Fatalf("NewLimiter(%+v) accepted", c)
		}
	}
	l, err := NewLimiter(LimiterConfig{FailuresMax: 2, NameFailuresMax: 3, Window: time.Hour, NamesMax: 10})
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP
	steps := []struct {
		op   string // "check" or "fail"
		user string
		addr string
		want error
	}{
		{"check", "a", "10.0.0.1", nil},
		{"fail", "a", "10.0.0.1", errWrongPassword},
		{"check", "a", "10.0.0.1", nil},
		{"fail", "a", "10.0.0.1", errWrongPassword},
		{"check", "a", "10.0.0.1", errTooManyTries}, // this address is locked for a
		{"check", "a", "10.0.0.2", nil},             // another address is not
		{"check", "b", "10.0.0.1", nil},             // nor another name
		{"fail", "a", "10.0.0.2", errWrongPassword}, // 3 failures for a: the ceiling
		{"check", "a", "10.0.0.2", errTooManyTries}, // a failing address past the ceiling
		{"check", "a", "10.0.0.3", nil},             // a clean address still gets in
		{"fail", "a", "10.0.0.3", errWrongPassword}, // its first guess is counted...
		{"check", "a", "10.0.0.3", errTooManyTries}, // ...and is its last this window
		{"check", "a", "2001:db8::1", nil},
		{"fail", "a", "2001:db8::1", errWrongPassword},
		{"check", "a", "2001:db8::ffff", errTooManyTries}, // same /64
		{"check", "a", "2001:db8:0:1::1", nil},            // another /64
	}
	for i, s := range steps {
		var got error
		if s.op == "check" {
			got = l.Check(s.user, ip(s.addr))
		} else {
			got = l.Fail(s.user, ip(s.addr))
		}
		if got != s.want {
			t.Fatalf("step %d %s(%s from %s): %v, want %v", i, s.op, s.user, s.addr, got, s.want)
		}
	}
}

// TestLockoutIsPerAddress: a wrong-password flood for a name from one
// address locks that address out, not the rightful user at another; every
// 429 says when to retry.
func TestLockoutIsPerAddress(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{failuresMax: 3, nameFailures: 20, window: time.Hour})
	e.mustAuth(t, "victim", "right")
	for i := range 50 { // far past both limits
		r := e.do(t, req{method: "POST", path: "/api/auth", body: authBody("victim", "guess"), from: "127.0.0.2"})
		want := 401
		if i >= 3 {
			want = 429
		}
		checkReply(t, r, want, "")
		if want == 429 && r.retryAfter != "3600" {
			t.Fatalf("Retry-After %q, want the window (3600)", r.retryAfter)
		}
	}
	for _, from := range []string{"127.0.0.3", "127.0.0.4", "::1"} {
		checkReply(t, e.do(t, req{method: "POST", path: "/api/auth", body: authBody("victim", "right"), from: from}), 200, "token")
	}
	// The attacker's address stays locked even with the right password.
	checkReply(t, e.do(t, req{method: "POST", path: "/api/auth", body: authBody("victim", "right"), from: "127.0.0.2"}), 429, "too many")
}

// TestRegistrationRatePerAddress: new names from one address are limited to
// the burst, then 429 with Retry-After; other addresses and logins of
// existing users are not affected.
func TestRegistrationRatePerAddress(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{registerRate: 0.001, registerBurst: 3})
	for i := range 3 {
		checkReply(t, e.do(t, req{method: "POST", path: "/api/auth", body: authBody(fmt.Sprintf("new%d", i), "pw"), from: "127.0.0.2"}), 200, "token")
	}
	r := e.do(t, req{method: "POST", path: "/api/auth", body: authBody("new3", "pw"), from: "127.0.0.2"})
	checkReply(t, r, 429, "registrations")
	if r.retryAfter != "1" {
		t.Fatalf("Retry-After %q", r.retryAfter)
	}
	if _, ok := e.store.State("new3"); ok {
		t.Fatal("a refused registration created the user")
	}
	checkReply(t, e.do(t, req{method: "POST", path: "/api/auth", body: authBody("new0", "pw"), from: "127.0.0.2"}), 200, "token")
	checkReply(t, e.do(t, req{method: "POST", path: "/api/auth", body: authBody("new3", "pw"), from: "127.0.0.3"}), 200, "token")
}

// TestHasherVerifiesFirst: with the one worker busy, a verification queued
// after a new hash runs before it, so registrations cannot make logins of
// existing users wait. Each job blocks in observe until the test lets it
// go, so the job that finishes after one step is the one the worker took.
func TestHasherVerifiesFirst(t *testing.T) {
	t.Parallel()
	entered, step := make(chan struct{}, 4), make(chan struct{})
	h, err := NewHasher(bcrypt.MinCost, 1, 4, func(time.Duration) { entered <- struct{}{}; <-step })
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	stored := mustHash(t, "pw")
	finished := make(chan string, 3)
	go func() { _, _ = h.Hash([]byte("a")); finished <- "running" }()
	<-entered // the worker holds the first job
	go func() { _, _ = h.Hash([]byte("b")); finished <- "new hash" }()
	waitFor(t, "the new hash to be queued", func() bool { return len(h.hash) == 1 })
	go func() { _, _ = h.Compare(stored, []byte("pw")); finished <- "verification" }()
	waitFor(t, "the verification to be queued", func() bool { return len(h.verify) == 1 })
	var order []string
	for range 3 {
		step <- struct{}{}
		order = append(order, <-finished)
		if len(order) < 3 {
			<-entered
		}
	}
	if order[1] != "verification" || order[2] != "new hash" {
		t.Fatalf("jobs ran in order %v, want the verification before the queued new hash", order)
	}
}

// gate blocks the hasher's observe callback once armed: calls then wait
// until it is opened.
type gate struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate(tb testing.TB) *gate {
	g := &gate{entered: make(chan struct{}, 16), release: make(chan struct{})}
	tb.Cleanup(g.open) // never leave a worker blocked
	return g
}

func (g *gate) observe(time.Duration) {
	if !g.armed.Load() {
		return
	}
	g.entered <- struct{}{}
	<-g.release
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) mustEnter(tb testing.TB) {
	tb.Helper()
	select {
	case <-g.entered:
	case <-time.After(failTimeout):
		tb.Fatal("no bcrypt job reached the worker")
	}
}

// TestHasherQueueFull: with the one worker busy and both queue slots taken
// (a new hash and a verification), a login that needs bcrypt gets 503 at
// once, while logins that need no bcrypt and the other endpoints keep
// working.
func TestHasherQueueFull(t *testing.T) {
	t.Parallel()
	g := newGate(t)
	e := mustEnv(t, envConfig{hashWorkers: 1, hashQueue: 1, observe: g.observe})
	known := e.mustAuth(t, "known", "pw") // resident, digest known
	for _, n := range []string{"cold", "cold2", "warm"} {
		e.store.Put(n, actors.UserState{PasswordHash: mustHash(t, "pw"), Coins: actors.StartingCoins})
	}
	if _, err := e.sys.Info("warm"); err != nil { // resident, no digest yet
		t.Fatal(err)
	}
	g.armed.Store(true)
	type result struct {
		name string
		r    reply
	}
	results := make(chan result, 3)
	login := func(name string) {
		results <- result{name, e.do(t, req{method: "POST", path: "/api/auth", body: authBody(name, "pw")})}
	}
	go login("first") // runs on the worker, blocked in observe
	g.mustEnter(t)
	go login("second") // a new hash, waits in its queue
	waitFor(t, "the second job to be queued", func() bool { return len(e.hasher.hash) == 1 })
	go login("cold2") // a verification, waits in its queue
	waitFor(t, "the verification to be queued", func() bool { return len(e.hasher.verify) == 1 })
	if d := e.hasher.QueueDepth(); d != 3 {
		t.Fatalf("QueueDepth %d, want 3 (one running, two queued)", d)
	}

	tests := []struct {
		name   string
		r      req
		status int
		errSub string
	}{
		{"new user needs bcrypt", req{method: "POST", path: "/api/auth", body: authBody("third", "pw")}, 503, "overloaded"},
		{"stored user without digest needs bcrypt", req{method: "POST", path: "/api/auth", body: authBody("cold", "pw")}, 503, "overloaded"},
		{"resident user without digest needs bcrypt", req{method: "POST", path: "/api/auth", body: authBody("warm", "pw")}, 503, "overloaded"},
		{"known user needs none", req{method: "POST", path: "/api/auth", body: authBody("known", "pw")}, 200, ""},
		{"info unaffected", req{method: "GET", path: "/api/info", token: known}, 200, ""},
		{"buy unaffected", req{method: "GET", path: "/api/buy/pen", token: known}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkReply(t, e.do(t, tt.r), tt.status, tt.errSub)
		})
	}
	if _, ok := e.store.State("third"); ok {
		t.Fatal("refused registration created the user")
	}
	if _, err := e.hasher.Hash([]byte("pw")); !errors.Is(err, actors.ErrOverloaded) {
		t.Fatalf("Hash with a full queue: %v, want ErrOverloaded", err)
	}
	if _, err := e.hasher.Compare(mustHash(t, "pw"), []byte("pw")); !errors.Is(err, actors.ErrOverloaded) {
		t.Fatalf("Compare with a full queue: %v, want ErrOverloaded", err)
	}
	g.open()
	for range 3 {
		select {
		case res := <-results:
			checkReply(t, res.r, 200, "")
		case <-time.After(failTimeout):
			t.Fatal("queued logins did not finish")
		}
	}
	e.mustAuth(t, "third", "pw") // the queue drained: retry works
	e.mustAuth(t, "warm", "pw")
}

// TestHasherWaitDeadline: a job that waits in the queue longer than
// HashWaitMax is dropped unstarted and its login answered 503; the user is
// not created.
func TestHasherWaitDeadline(t *testing.T) {
	t.Parallel()
	g := newGate(t)
	e := mustEnv(t, envConfig{hashWorkers: 1, hashQueue: 1, observe: g.observe})
	g.armed.Store(true)
	results := make(chan reply, 2)
	login := func(name string) {
		results <- e.do(t, req{method: "POST", path: "/api/auth", body: authBody(name, "pw")})
	}
	go login("running")
	g.mustEnter(t)
	go login("waiting")
	waitFor(t, "the second job to be queued", func() bool { return len(e.hasher.hash) == 1 })
	queued := time.Now() // the job's deadline is at most HashWaitMax from here
	waitFor(t, "the queued job's deadline to pass", func() bool { return time.Since(queued) > HashWaitMax })
	hashes := e.hashes.Load()
	g.open()
	got := map[int]int{}
	for range 2 {
		select {
		case r := <-results:
			got[r.status]++
			if r.status == 503 {
				checkReply(t, r, 503, "overloaded")
			}
		case <-time.After(failTimeout):
			t.Fatal("logins did not finish")
		}
	}
	if got[200] != 1 || got[503] != 1 {
		t.Fatalf("statuses %v, want one 200 and one 503", got)
	}
	if _, ok := e.store.State("waiting"); ok {
		t.Fatal("the dropped job's user was created")
	}
	// The running job was counted when it reached the gate; the expired
	// one never starts bcrypt, so nothing more is observed.
	if n := e.hashes.Load(); n != hashes {
		t.Fatalf("%d more hashes ran after the gate opened, want 0", n-hashes)
	}
}

func TestHasherConfig(t *testing.T) {
	tests := []struct {
		name                 string
		cost, workers, queue int
		ok                   bool
	}{
		{"valid", 4, 1, 1, true},
		{"cost too low", 3, 1, 1, false},
		{"cost too high", 32, 1, 1, false},
		{"no workers", 4, 0, 1, false},
		{"no queue", 4, 1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHasher(tt.cost, tt.workers, tt.queue, nil)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if h == nil {
				return
			}
			defer h.Close()
			hash, err := h.Hash([]byte("pw"))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				pw   string
				want bool
			}{{"pw", true}, {"pW", false}, {"", false}} {
				if ok, err := h.Compare(hash, []byte(c.pw)); ok != c.want || err != nil {
					t.Fatalf("Compare(%q): %v %v, want %v", c.pw, ok, err, c.want)
				}
			}
			if _, err := h.Compare([]byte("not a bcrypt hash"), []byte("pw")); err == nil {
				t.Fatal("Compare accepted a malformed hash")
			}
			d1, d2 := h.Digest([]byte("a"), []byte("bc")), h.Digest([]byte("ab"), []byte("c"))
			if SameDigest(d1, d2) || !SameDigest(d1, h.Digest([]byte("a"), []byte("bc"))) {
				t.Fatal("digest does not separate name and password")
			}
		})
	}
}

// barrier makes the first n observe calls wait for each other: n bcrypt jobs
// are then known to run at the same time, i.e. every request looked the user
// up before any registered it.
type barrier struct {
	mu      sync.Mutex
	n       int
	arrived int
	all     chan struct{}
	met     bool
}

func newBarrier(n int) *barrier { return &barrier{n: n, all: make(chan struct{})} }

func (b *barrier) observe(time.Duration) {
	b.mu.Lock()
	b.arrived++
	switch {
	case b.arrived == b.n:
		b.met = true
		close(b.all)
	case b.arrived > b.n:
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	select {
	case <-b.all:
	case <-time.After(failTimeout):
	}
}

func (b *barrier) wasMet() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.met
}

// TestConcurrentRegistration: two first logins of one name race. With the
// same password both succeed and one user exists with 1000 coins; with
// different passwords exactly one password works afterwards.
func TestConcurrentRegistration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		passwords [2]string
		wantOK    int // requests answered 200
	}{
		{"same password", [2]string{"pw", "pw"}, 2},
		{"different passwords", [2]string{"pw-a", "pw-b"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newBarrier(2)
			e := mustEnv(t, envConfig{hashWorkers: 2, observe: b.observe})
			var wg sync.WaitGroup
			var got [2]reply
			for i, pw := range tt.passwords {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got[i] = e.do(t, req{method: "POST", path: "/api/auth", body: authBody("twin", pw)})
				}()
			}
			wg.Wait()
			if !b.wasMet() {
				t.Fatal("the registrations did not overlap")
			}
			ok, winner := 0, -1
			for i, r := range got {
				switch r.status {
				case 200:
					ok, winner = ok+1, i
				case 401:
					checkReply(t, r, 401, "wrong password")
				default:
					t.Fatalf("request %d: %d %s", i, r.status, r.body)
				}
			}
			if ok != tt.wantOK {
				t.Fatalf("%d requests succeeded, want %d: %+v", ok, tt.wantOK, got)
			}
			if n := e.store.Registrations("twin"); n != 1 {
				t.Fatalf("%d registrations, want 1", n)
			}
			for i, pw := range tt.passwords {
				r := e.do(t, req{method: "POST", path: "/api/auth", body: authBody("twin", pw)})
				want := 200
				if tt.passwords[i] != tt.passwords[winner] {
					want = 401
				}
				checkReply(t, r, want, "")
			}
			if ib, _ := e.mustInfo(t, e.mustAuth(t, "twin", tt.passwords[winner])); ib.Coins != 1000 {
				t.Fatalf("coins %d, want 1000", ib.Coins)
			}
		})
	}
}
