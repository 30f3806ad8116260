package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"merch/internal/pgtest"
	"merch/persist"
)

// The fault tests run the real server binary as a separate process against
// a real PostgreSQL (pgtest), so kill -9 and database outages are real.

var (
	serverBin string
	cluster   *pgtest.Cluster
	soak      = os.Getenv("SOAK") != ""
)

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "merch-faults-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	serverBin = filepath.Join(dir, "merch-store")
	build := exec.Command("go", "build", "-o", serverBin, "merch/cmd/merch-store")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 0, fmt.Errorf("build server: %w", err)
	}
	cluster, err = pgtest.Start(pgtest.Options{})
	if err != nil {
		return 0, err
	}
	defer cluster.Close()
	return m.Run(), nil
}

var dbSeq int

func mustDatabase(tb testing.TB) string {
	tb.Helper()
	dbSeq++
	url, err := cluster.CreateDatabase(fmt.Sprintf("faults_%d", dbSeq))
	if err != nil {
		tb.Fatal(err)
	}
	return url
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// server is the merch-store binary running as a child process.
type server struct {
	tb   testing.TB
	addr string
	env  []string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   sync.Mutex
}

func newServer(tb testing.TB, dbURL string, extraEnv ...string) *server {
	tb.Helper()
	s := &server{tb: tb, addr: freeAddr(tb)}
	s.env = append(os.Environ(), "HTTP_ADDR="+s.addr, "DATABASE_URL="+dbURL,
		"JWT_SECRET=faults-secret-0123456789", "BCRYPT_COST=4", "LOG_LEVEL=warn")
	s.env = append(s.env, extraEnv...)
	tb.Cleanup(s.stop)
	return s
}

// start launches the binary and waits until /readyz answers 200.
func (s *server) start() {
	s.tb.Helper()
	s.mu.Lock()
	s.log = new(bytes.Buffer)
	s.cmd = exec.Command(serverBin)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := s.cmd.Start()
	s.mu.Unlock()
	if err != nil {
		s.tb.Fatal(err)
	}
	if !waitUntil(15*time.Second, func() bool { return s.get("/readyz") == 200 }) {
		s.tb.Fatalf("server not ready; log:\n%s", s.logText())
	}
}

func (s *server) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// kill9 kills the server with SIGKILL and reaps it.
func (s *server) kill9() {
	s.tb.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

// stop stops the server gracefully (SIGTERM), killing it if it hangs.
func (s *server) stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		s.tb.Errorf("server did not stop on SIGTERM")
	}
}

func (s *server) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

var quick = &http.Client{Timeout: 2 * time.Second}

func (s *server) get(path string) int {
	resp, err := quick.Get("http://" + s.addr + path)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitUntil polls cond every 20 ms until it holds or d passes.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client talks to the server over keep-alive connections.
type client struct {
	base string
	hc   *http.Client
}

func newClient(addr string, conns int, timeout time.Duration) *client {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		IdleConnTimeout: 30 * time.Second}
	return &client{base: "http://" + addr, hc: &http.Client{Timeout: timeout, Transport: tr}}
}

// result of one request: code 0 means no HTTP answer (timeout, refused).
type result struct {
	code    int
	body    []byte
	latency time.Duration
	err     error
}

func (c *client) do(method, path, token, key string, body any) result {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return result{err: err}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return result{err: err, latency: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{code: resp.StatusCode, body: b, latency: time.Since(start), err: err}
}

func (c *client) auth(tb testing.TB, user, password string) string {
	tb.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		r := c.do("POST", "/api/auth", "", "", map[string]string{"username": user, "password": password})
		if r.code == 200 {
			var out struct{ Token string }
			if err := json.Unmarshal(r.body, &out); err != nil {
				tb.Fatal(err)
			}
			return out.Token
		}
		if r.code != 503 && r.code != 0 {
			tb.Fatalf("auth %s: %d %s", user, r.code, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("auth %s: no answer", user)
	return ""
}

type info struct {
	Coins     int64 `json:"coins"`
	Inventory []struct {
		Type     string `json:"type"`
		Quantity int64  `json:"quantity"`
	} `json:"inventory"`
	CoinHistory struct {
		Received []struct {
			FromUser string `json:"fromUser"`
			Amount   int64  `json:"amount"`
		} `json:"received"`
		Sent []struct {
			ToUser string `json:"toUser"`
			Amount int64  `json:"amount"`
		} `json:"sent"`
	} `json:"coinHistory"`
}

var prices = map[string]int64{"t-shirt": 80, "cup": 20, "book": 50, "pen": 10, "powerbank": 200,
	"hoody": 300, "umbrella": 200, "socks": 10, "wallet": 50, "pink-hoody": 500}

// auditAPI checks money conservation through the API: Σ balances +
// Σ inventory value = 1000 × users, no negative balance, and every
// transfer seen the same from both sides.
func auditAPI(tb testing.TB, c *client, tokens map[string]string) {
	tb.Helper()
	var total int64
	sent := map[[2]string]int64{}
	recv := map[[2]string]int64{}
	for user, tok := range tokens {
		r := c.do("GET", "/api/info", tok, "", nil)
		if r.code != 200 {
			tb.Fatalf("info %s: %d %s %v", user, r.code, r.body, r.err)
		}
		var in info
		if err := json.Unmarshal(r.body, &in); err != nil {
			tb.Fatal(err)
		}
		if in.Coins < 0 {
			tb.Errorf("%s: negative balance %d", user, in.Coins)
		}
		total += in.Coins
		for _, it := range in.Inventory {
			total += it.Quantity * prices[it.Type]
		}
		for _, s := range in.CoinHistory.Sent {
			sent[[2]string{user, s.ToUser}] += s.Amount
		}
		for _, r := range in.CoinHistory.Received {
			recv[[2]string{r.FromUser, user}] += r.Amount
		}
	}
	if want := 1000 * int64(len(tokens)); total != want {
		tb.Errorf("API audit: Σ balances + Σ inventory = %d, want %d", total, want)
	}
	for pair, a := range sent {
		if recv[pair] != a {
			tb.Errorf("API audit: %s sent %s %d, %s received %d", pair[0], pair[1], a, pair[1], recv[pair])
		}
	}
	if len(sent) != len(recv) {
		tb.Errorf("API audit: %d sent pairs, %d received pairs", len(sent), len(recv))
	}
}

// auditDB runs persist.Audit on the database.
func auditDB(tb testing.TB, dbURL string, users int) {
	tb.Helper()
	ctx := context.Background()
	pool, err := persist.Open(ctx, dbURL, 2)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	r, err := persist.Audit(ctx, pool)
	if err != nil {
		tb.Fatal(err)
	}
	if !r.OK() || r.Users != int64(users) {
		tb.Fatalf("DB audit (want %d users): %s", users, r)
	}
}

// dbKeys returns every idempotency key stored with a change, and how many
// changes the ledgers hold.
func dbKeys(tb testing.TB, dbURL string) (keys map[string]bool, changes int) {
	tb.Helper()
	ctx := context.Background()
	pool, err := persist.Open(ctx, dbURL, 2)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `SELECT user_name || '/' || key FROM idempotency_keys`)
	if err != nil {
		tb.Fatal(err)
	}
	keys = map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			tb.Fatal(err)
		}
		keys[k] = true
	}
	rows.Close()
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM purchases) + (SELECT count(*) FROM transfers)`).Scan(&changes); err != nil {
		tb.Fatal(err)
	}
	return keys, changes
}

// latencies summarises durations.
type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return s[i]
}

func (l latencies) String() string {
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(l), l.pct(.5).Round(time.Microsecond),
		l.pct(.99).Round(time.Microsecond), l.pct(1).Round(time.Microsecond))
}

// rssBytes reads a process's resident set size from /proc.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}
