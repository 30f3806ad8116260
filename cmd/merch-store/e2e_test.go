package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBuyScenario(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	tok := s.auth("buyer", "secret")
	for _, item := range []string{"cup", "cup", "pink-hoody"} {
		if code, body := s.buy(tok, item); code != 200 {
			t.Fatalf("buy %s: %d %s", item, code, body)
		}
	}
	info, raw := s.info(tok)
	if info.Coins != 1000-20-20-500 {
		t.Errorf("coins = %d", info.Coins)
	}
	want := `{"coins":460,"inventory":[{"type":"cup","quantity":2},{"type":"pink-hoody","quantity":1}],"coinHistory":{"received":[],"sent":[]}}`
	if string(raw) != want {
		t.Errorf("info = %s\nwant %s", raw, want)
	}
	if code, body := s.buy(tok, "pink-hoody"); code != 400 || !strings.Contains(string(body), "insufficient") {
		t.Errorf("over-spend: %d %s", code, body)
	}
	if code, _ := s.buy(tok, "yacht"); code != 400 {
		t.Errorf("unknown item: %d", code)
	}
	mustAudit(t, url, 1)
}

func TestTransferScenario(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	alice, bob := s.auth("alice", "a-pass"), s.auth("bob", "b-pass")
	if code, body := s.send(alice, "bob", 300); code != 200 {
		t.Fatalf("send: %d %s", code, body)
	}
	// A 200 means durable and visible in both users' info at once.
	a, _ := s.info(alice)
	b, _ := s.info(bob)
	if a.Coins != 700 || b.Coins != 1300 {
		t.Fatalf("coins alice=%d bob=%d", a.Coins, b.Coins)
	}
	if len(a.CoinHistory.Sent) != 1 || a.CoinHistory.Sent[0].ToUser != "bob" || a.CoinHistory.Sent[0].Amount != 300 {
		t.Errorf("alice sent = %+v", a.CoinHistory.Sent)
	}
	if len(b.CoinHistory.Received) != 1 || b.CoinHistory.Received[0].FromUser != "alice" {
		t.Errorf("bob received = %+v", b.CoinHistory.Received)
	}
	cases := []struct {
		name string
		to   string
		amt  int64
		want int
	}{
		{"insufficient", "bob", 701, 400},
		{"self", "alice", 1, 400},
		{"unknown recipient", "nobody", 1, 400},
		{"zero", "bob", 0, 400},
		{"negative", "bob", -5, 400},
		{"exact balance", "bob", 700, 200},
		{"empty wallet", "bob", 1, 400},
	}
	for _, tc := range cases {
		if code, body := s.send(alice, tc.to, tc.amt); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	mustAudit(t, url, 2)
}

func TestHistoryGrouping(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	tok := map[string]string{}
	for _, u := range []string{"ann", "ben", "cat"} {
		tok[u] = s.auth(u, "pw-"+u)
	}
	for _, tr := range []struct {
		from, to string
		amt      int64
	}{{"ann", "ben", 10}, {"ann", "ben", 20}, {"ben", "ann", 5}, {"cat", "ann", 7}, {"cat", "ann", 1}, {"ann", "cat", 2}} {
		if code, body := s.send(tok[tr.from], tr.to, tr.amt); code != 200 {
			t.Fatalf("%+v: %d %s", tr, code, body)
		}
	}
	_, raw := s.info(tok["ann"])
	want := `{"coins":981,"inventory":[],"coinHistory":{"received":[{"fromUser":"ben","amount":5},{"fromUser":"cat","amount":8}],"sent":[{"toUser":"ben","amount":30},{"toUser":"cat","amount":2}]}}`
	if string(raw) != want {
		t.Errorf("ann info = %s\nwant %s", raw, want)
	}
	mustAudit(t, url, 3)
}

func TestRestartShowsIdenticalState(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	users := []string{"u1", "u2", "u3", "u4"}
	toks := map[string]string{}
	for _, u := range users {
		toks[u] = s.auth(u, "pass "+u)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	items := []string{"pen", "socks", "cup", "book", "t-shirt"}
	for range 60 {
		u := users[rng.IntN(len(users))]
		if rng.IntN(2) == 0 {
			s.buy(toks[u], items[rng.IntN(len(items))])
		} else {
			s.send(toks[u], users[rng.IntN(len(users))], int64(rng.IntN(40)+1))
		}
	}
	before := map[string]string{}
	for _, u := range users {
		_, raw := s.info(toks[u])
		before[u] = string(raw)
	}
	s.close()

	s2 := mustStart(t, testConfig(url))
	for _, u := range users {
		// Old tokens stay valid (same secret); state is loaded from PostgreSQL.
		_, raw := s2.info(toks[u])
		if string(raw) != before[u] {
			t.Errorf("%s after restart:\n got %s\nwant %s", u, raw, before[u])
		}
	}
	if tok := s2.auth("u1", "pass u1"); tok == "" {
		t.Fatal("login after restart failed")
	}
	if code, _ := s2.do("POST", "/api/auth", "", map[string]string{"username": "u1", "password": "wrong"}); code != 401 {
		t.Errorf("wrong password after restart: %d", code)
	}
	mustAudit(t, url, int64(len(users)))
}

// TestConcurrentMoneyConserved: 32 goroutines do random buys and transfers
// among 12 users, including opposite-direction pairs, then the API and the
// database must both show every coin accounted for.
func TestConcurrentMoneyConserved(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	const users, workers, opsPerWorker = 12, 32, 40
	names := make([]string, users)
	toks := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("c%02d", i)
		toks[i] = s.auth(names[i], "pw")
	}
	items := []string{"pen", "socks", "cup", "book", "wallet", "t-shirt", "umbrella"}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan string, workers*opsPerWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range opsPerWorker {
				from := rng.IntN(users)
				var code int
				var body []byte
				switch {
				case i%3 == 0:
					code, body = s.buy(toks[from], items[rng.IntN(len(items))])
				case w%2 == 0: // opposite-direction pairs: even workers 0→1, odd 1→0
					a, b := 2*(w/2%(users/2)), 2*(w/2%(users/2))+1
					if w%4 == 2 {
						a, b = b, a
					}
					code, body = s.send(toks[a], names[b], int64(rng.IntN(30)+1))
				default:
					to := (from + 1 + rng.IntN(users-1)) % users
					code, body = s.send(toks[from], names[to], int64(rng.IntN(60)+1))
				}
				switch {
				case code == 200:
					ok.Add(1)
				case code == 400 && strings.Contains(string(body), "insufficient"):
					refused.Add(1)
				default:
					errs <- fmt.Sprintf("%d %s", code, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("unexpected answer: %s", e)
	}
	if ok.Load() == 0 {
		t.Fatal("no operation succeeded")
	}
	var total int64
	for i := range names {
		info, _ := s.info(toks[i])
		if info.Coins < 0 {
			t.Errorf("%s negative: %d", names[i], info.Coins)
		}
		total += int64(info.Coins)
		for _, it := range info.Inventory {
			total += it.Quantity * price(t, it.Type)
		}
	}
	if total != 1000*users {
		t.Errorf("API: Σ balances + Σ inventory value = %d, want %d", total, 1000*users)
	}
	mustAudit(t, url, users)
	t.Logf("%d ok, %d refused for insufficient funds", ok.Load(), refused.Load())
}

func price(tb testing.TB, item string) int64 {
	tb.Helper()
	prices := map[string]int64{"t-shirt": 80, "cup": 20, "book": 50, "pen": 10, "powerbank": 200,
		"hoody": 300, "umbrella": 200, "socks": 10, "wallet": 50, "pink-hoody": 500}
	p, ok := prices[item]
	if !ok {
		tb.Fatalf("unknown item %q", item)
	}
	return p
}

// TestGracefulShutdownKeepsAcknowledged: requests in flight during Close
// either finish (and are durable) or are refused; every 200 is in the
// database.
func TestGracefulShutdownKeepsAcknowledged(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	const users = 8
	toks := make([]string, users)
	for i := range toks {
		toks[i] = s.auth(fmt.Sprintf("g%d", i), "pw")
	}
	var acked atomic.Int64
	var wg sync.WaitGroup
	started := make(chan struct{})
	var once sync.Once
	for w := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				code, _, err := s.tryDo("GET", "/api/buy/pen", toks[w])
				once.Do(func() { close(started) })
				if err != nil {
					return // the server went away: expected during shutdown
				}
				if code == 200 {
					acked.Add(1)
				}
			}
		}()
	}
	<-started
	s.close()
	wg.Wait()
	r := mustAudit(t, url, users)
	if r.Spent != 10*acked.Load() {
		// More spent than acknowledged is possible only for requests whose
		// answer was lost; fewer means an acknowledged purchase was lost.
		if r.Spent < 10*acked.Load() {
			t.Fatalf("acknowledged %d pens, database has %d", acked.Load(), r.Spent/10)
		}
		t.Logf("database has %d pens, %d acknowledged (answers lost in shutdown)", r.Spent/10, acked.Load())
	}
}

func (s *server) tryDo(method, path, token string) (int, []byte, error) {
	req, err := newRequest(method, s.base+path, token)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, nil
}

func TestOperationalEndpoints(t *testing.T) {
	s := mustStart(t, testConfig(mustDatabase(t)))
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := s.do("GET", path, "", nil); code != 200 {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	code, body := s.do("GET", "/metrics", "", nil)
	if code != 200 || !strings.Contains(string(body), "merch_http_requests_total") {
		t.Errorf("/metrics: %d", code)
	}
	// None of them is on the public listener.
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/debug/pprof/"} {
		resp, err := s.hc.Get(s.base + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("public %s: %d, want 404", path, resp.StatusCode)
		}
	}
	if code, _ := s.do("GET", "/debug/pprof/", "", nil); code != 200 {
		t.Errorf("admin pprof: %d", code)
	}
}

// TestReadyRequiresSyncStandby: with REQUIRE_SYNC_STANDBY a primary with
// no synchronous standby (the test's PostgreSQL) is not ready, and says
// why; writes are still served (bench/dbha has the standby's side).
func TestReadyRequiresSyncStandby(t *testing.T) {
	cfg := testConfig(mustDatabase(t))
	cfg.RequireSyncStandby = true
	s := mustStart(t, cfg)
	code, body := s.do("GET", "/readyz", "", nil)
	if code != 503 || !strings.Contains(string(body), "no synchronous standby") {
		t.Fatalf("/readyz: %d %s, want 503 naming the missing standby", code, body)
	}
	if v, found := family(s.scrape(), "merch_db_synchronous_standby"); !found || v != 0 {
		t.Fatalf("merch_db_synchronous_standby found=%v value=%v, want 0", found, v)
	}
	token := s.auth("solo", "pw-solo")
	if code, body := s.do("GET", "/api/buy/pen", token, nil); code != 200 {
		t.Fatalf("buy: %d %s", code, body)
	}
}

func TestConfig(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://x", "JWT_SECRET": "0123456789abcdef", "JWT_TTL": "1h", "BCRYPT_COST": "5"}
	get := func(k string) string { return env[k] }
	c, err := LoadConfig([]string{"-bcrypt-cost", "6", "-http-addr", ":9999"}, get)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.DatabaseURL, want.JWTSecret, want.JWTTTL, want.BcryptCost, want.HTTPAddr = "postgres://x", "0123456789abcdef", 3600e9, 6, ":9999"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("config = %+v\nwant %+v", c, want)
	}
	ok := map[string]string{"DATABASE_URL": "postgres://x", "JWT_SECRET": "0123456789abcdef"}
	bad := []struct {
		env  map[string]string // set on top of ok; "" removes a variable
		want string            // the error names the variable
	}{
		{map[string]string{"DATABASE_URL": ""}, "DATABASE_URL is required"},
		{map[string]string{"JWT_SECRET": ""}, "JWT_SECRET"},
		{map[string]string{"JWT_SECRET": "short"}, "JWT_SECRET"},
		{map[string]string{"JWT_TTL": "soon"}, "JWT_TTL"},
		{map[string]string{"BCRYPT_COST": "ten"}, "BCRYPT_COST"},
		{map[string]string{"BCRYPT_COST": "99"}, "BCRYPT_COST must be 4…31"},
		{map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{map[string]string{"LOG_LEVEL": "inf"}, "LOG_LEVEL must be one of debug, info, warn, error"},
		{map[string]string{"LOG_LEVEL": "INFO"}, "LOG_LEVEL"},
		{map[string]string{"JOURNAL_BATCH": "0"}, "JOURNAL_BATCH"},
		{map[string]string{"JOURNAL_BATCH": "20000"}, "JOURNAL_BATCH"},
		{map[string]string{"MAX_CONNS": "0"}, "MAX_CONNS"},
		{map[string]string{"MAX_CONNS_PER_IP": "-1"}, "MAX_CONNS_PER_IP"},
		{map[string]string{"REGISTER_RATE": "-1"}, "REGISTER_RATE"},
		{map[string]string{"LOGIN_FAILURES_NAME_MAX": "5"}, "LOGIN_FAILURES_NAME_MAX"},
		{map[string]string{"ADMIN_ADDR": ":8080"}, "ADMIN_ADDR"},
		{map[string]string{"START_TIMEOUT": "0s"}, "START_TIMEOUT"},
		{map[string]string{"DATABASE_URL": "postgres://u:s3cret@h:bad/db"}, "DATABASE_URL is not a valid"},
	}
	for _, b := range bad {
		e := map[string]string{}
		for k, v := range ok {
			e[k] = v
		}
		for k, v := range b.env {
			e[k] = v
		}
		_, err := LoadConfig(nil, func(k string) string { return e[k] })
		if err == nil {
			t.Errorf("bad config accepted: %v", b.env)
			continue
		}
		if !strings.Contains(err.Error(), b.want) {
			t.Errorf("%v: error %q does not name %q", b.env, err, b.want)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// TestHelpShowsNoSecrets: -h prints the documented defaults, never a value
// taken from the environment.
func TestHelpShowsNoSecrets(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://u:s3cret@db/merch", "JWT_SECRET": "jwt-s3cret-0123456789"}
	out := captureStderr(t, func() {
		if _, err := LoadConfig([]string{"-h"}, func(k string) string { return env[k] }); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("-h: %v", err)
		}
	})
	if strings.Contains(out, "s3cret") {
		t.Fatalf("-h shows a secret:\n%s", out)
	}
	if !strings.Contains(out, "-database-url") || !strings.Contains(out, `(default ":8080")`) {
		t.Fatalf("-h output lacks the flags or defaults:\n%s", out)
	}
}

// captureStderr returns what f writes to os.Stderr.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	f()
	os.Stderr = old
	_ = w.Close()
	return <-done
}

// TestUnplannedStopIsAnError: a listener that stops by itself (here: closed
// under the server) ends Wait with an error, so the process exits non-zero
// and a supervisor restarts it.
func TestUnplannedStopIsAnError(t *testing.T) {
	m := New(testConfig(mustDatabase(t)))
	m.OnFatal = func(err error) { t.Errorf("fatal: %v", err) }
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = m.ln.Close()
	done := make(chan error, 1)
	go func() { done <- m.Wait(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "listener stopped") {
			t.Fatalf("Wait = %v, want an unplanned-stop error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return after the listener closed")
	}
}

func TestStartNeedsOnFatal(t *testing.T) {
	m := New(testConfig(mustDatabase(t)))
	if err := m.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "OnFatal") {
		t.Fatalf("Start without OnFatal: %v", err)
	}
	_ = m.Close()
}
