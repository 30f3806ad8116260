// Package harness runs the real merch-store binary against a real
// PostgreSQL for the fault tests and the scale benchmarks: build, start,
// kill -9, stop, HTTP clients, and the money audits (API and database).
package harness

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

	"merch/actors"
	"merch/actors/actorstest"
	"merch/internal/pgtest"
	"merch/persist"
)

// The fault tests run the real Server binary as a separate process against
// a real PostgreSQL (pgtest), so kill -9 and database outages are real.

var (
	serverBin string
	// Cluster is the PostgreSQL Server the tests of the package use.
	Cluster *pgtest.Cluster
	// Soak is true under make soak (SOAK=1): long versions of the tests.
	Soak = os.Getenv("SOAK") != ""
)

// Main builds the Server binary and starts PostgreSQL, runs the tests and
// exits. Call it from TestMain.
func Main(m *testing.M) { run(m, true) }

// MainBinary is Main without the PostgreSQL: for tests that bring their
// own (bench/dbha's pg_auto_failover formation). Cluster stays nil.
func MainBinary(m *testing.M) { run(m, false) }

func run(m *testing.M, withDB bool) {
	code, err := setup(m, withDB)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M, withDB bool) (int, error) {
	dir, err := os.MkdirTemp("", "merch-faults-")
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	serverBin = filepath.Join(dir, "merch-store")
	build := exec.Command("go", "build", "-o", serverBin, "merch/cmd/merch-store")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 0, fmt.Errorf("build Server: %w", err)
	}
	if !withDB {
		return m.Run(), nil
	}
	Cluster, err = pgtest.Start(pgtest.Options{})
	if err != nil {
		return 0, err
	}
	defer Cluster.Close()
	return m.Run(), nil
}

var dbSeq int

// MustDatabase creates a fresh database and returns its URL.
func MustDatabase(tb testing.TB) string {
	tb.Helper()
	dbSeq++
	url, err := Cluster.CreateDatabase(fmt.Sprintf("h_%d", dbSeq))
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
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// Server is the merch-store binary running as a child process.
type Server struct {
	tb        testing.TB
	Addr      string // host:port, the same across restarts
	AdminAddr string // the admin listener (/readyz, /metrics), likewise
	// Prefix, when set before Start, runs the binary under this command,
	// e.g. {"prlimit", "--nofile=256:256", "--"}.
	Prefix []string
	env    []string
	proc   *process
	log    *bytes.Buffer
	mu     sync.Mutex
}

// process is one run of the binary; done closes when it has exited.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's result, once done
}

func NewServer(tb testing.TB, dbURL string, extraEnv ...string) *Server {
	tb.Helper()
	s := &Server{tb: tb, Addr: freeAddr(tb), AdminAddr: freeAddr(tb)}
	// REGISTER_RATE=0: every test registers its users from 127.0.0.1.
	s.env = append(os.Environ(), "HTTP_ADDR="+s.Addr, "ADMIN_ADDR="+s.AdminAddr, "DATABASE_URL="+dbURL,
		"JWT_SECRET="+JWTSecret, "BCRYPT_COST=4", "LOG_LEVEL=warn", "REGISTER_RATE=0")
	s.env = append(s.env, extraEnv...)
	tb.Cleanup(s.Stop)
	return s
}

// Start launches the binary and waits until /readyz answers 200.
func (s *Server) Start() {
	s.tb.Helper()
	s.Launch()
	if !WaitUntil(15*time.Second, func() bool { return s.Get("/readyz") == 200 }) {
		s.tb.Fatalf("Server not ready after 15 s (alive %v, /readyz %d, /healthz %d); log:\n%s",
			s.Alive(), s.Get("/readyz"), s.Get("/healthz"), s.LogText())
	}
}

// Launch starts the binary without waiting for it to be ready.
func (s *Server) Launch() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = new(bytes.Buffer)
	argv := append(append([]string(nil), s.Prefix...), serverBin)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = lockedWriter{&s.mu, s.log}, lockedWriter{&s.mu, s.log}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.tb.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.proc = p
}

// lockedWriter serialises the process's output with LogText.
type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (s *Server) LogText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// current returns the running (or exited, not yet taken) process.
func (s *Server) current() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// take hands over the process (nil if none) and forgets it.
func (s *Server) take() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	s.proc = nil
	return p
}

// Alive reports whether the process is running.
func (s *Server) Alive() bool {
	p := s.current()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// WaitExit waits up to d for the process to exit by itself and returns
// its exit code; exited is false if it is still running.
func (s *Server) WaitExit(d time.Duration) (code int, exited bool) {
	p := s.current()
	if p == nil {
		return 0, false
	}
	select {
	case <-p.done:
		s.take()
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return 0, false
	}
}

// Signal sends sig to the running process.
func (s *Server) Signal(sig os.Signal) {
	if p := s.current(); p != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Kill9 kills the Server with SIGKILL and reaps it.
func (s *Server) Kill9() {
	s.tb.Helper()
	p := s.take()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop stops the Server gracefully (SIGTERM), killing it if it hangs.
func (s *Server) Stop() {
	p := s.take()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		s.tb.Errorf("Server did not stop on SIGTERM")
	}
}

func (s *Server) PID() int {
	p := s.current()
	if p == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// JWTSecret is the servers' signing secret, so benchmarks can mint tokens.
const JWTSecret = "harness-secret-0123456789"

var quick = &http.Client{Timeout: 2 * time.Second}

// Get returns the status of GET path: /readyz, /healthz and /metrics on
// the admin listener, anything else on the public one (0: no answer).
func (s *Server) Get(path string) int {
	addr := s.Addr
	switch path {
	case "/readyz", "/healthz", "/metrics":
		addr = s.AdminAddr
	}
	resp, err := quick.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// WaitUntil polls cond every 20 ms until it holds or d passes.
func WaitUntil(d time.Duration, cond func() bool) bool {
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

// Client talks to the Server over keep-alive connections.
type Client struct {
	base string
	hc   *http.Client
}

func NewClient(addr string, conns int, timeout time.Duration) *Client {
	return NewClientFrom(addr, "", conns, timeout)
}

// NewClientFrom is NewClient with connections from the local address from
// (an IP of 127.0.0.0/8; "" for any), to test per-address rules.
func NewClientFrom(addr, from string, conns int, timeout time.Duration) *Client {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		IdleConnTimeout: 30 * time.Second}
	if from != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: timeout}
		tr.DialContext = d.DialContext
	}
	return &Client{base: "http://" + addr, hc: &http.Client{Timeout: timeout, Transport: tr}}
}

// Base is the URL the client sends to.
func (c *Client) Base() string { return c.base }

// Result of one request: code 0 means no HTTP answer (timeout, refused).
type Result struct {
	Code    int
	Header  http.Header
	Body    []byte
	Latency time.Duration
	Err     error
}

func (c *Client) Do(method, path, token, key string, body any) Result {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return Result{Err: err}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return c.roundTrip(req)
}

// roundTrip sends req and reads the whole answer, timed.
func (c *Client) roundTrip(req *http.Request) Result {
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return Result{Err: err, Latency: time.Since(start)}
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return Result{Code: resp.StatusCode, Header: resp.Header, Body: b, Latency: time.Since(start), Err: err}
}

// DoHeader sends a bodyless request with one extra header.
func (c *Client) DoHeader(method, path, header, value string) Result {
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		return Result{Err: err}
	}
	req.Header.Set(header, value)
	return c.roundTrip(req)
}

func (c *Client) Auth(tb testing.TB, user, password string) string {
	tb.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		r := c.Do("POST", "/api/auth", "", "", map[string]string{"username": user, "password": password})
		if r.Code == 200 {
			var out struct{ Token string }
			if err := json.Unmarshal(r.Body, &out); err != nil {
				tb.Fatal(err)
			}
			return out.Token
		}
		if r.Code != 503 && r.Code != 0 {
			tb.Fatalf("auth %s: %d %s", user, r.Code, r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("auth %s: no answer", user)
	return ""
}

var Prices = map[string]int64{"t-shirt": 80, "cup": 20, "book": 50, "pen": 10, "powerbank": 200,
	"hoody": 300, "umbrella": 200, "socks": 10, "wallet": 50, "pink-hoody": 500}

// AuditAPI checks money conservation through the API: Σ balances +
// Σ inventory value = 1000 × users, no negative balance, and every
// transfer seen the same from both sides.
func AuditAPI(tb testing.TB, c *Client, tokens map[string]string) {
	tb.Helper()
	var total actors.Coins
	sent := map[[2]string]actors.Coins{}
	recv := map[[2]string]actors.Coins{}
	for user, tok := range tokens {
		r := c.Do("GET", "/api/info", tok, "", nil)
		if r.Code != 200 {
			tb.Fatalf("Info %s: %d %s %v", user, r.Code, r.Body, r.Err)
		}
		in, err := actorstest.DecodeInfo(r.Body)
		if err != nil {
			tb.Fatalf("info %s %s: %v", user, r.Body, err)
		}
		if in.Coins < 0 {
			tb.Errorf("%s: negative balance %d", user, in.Coins)
		}
		total += in.Coins
		for _, it := range in.Inventory {
			total += actors.Coins(it.Quantity * Prices[it.Type])
		}
		for _, s := range in.CoinHistory.Sent {
			sent[[2]string{user, s.ToUser}] += s.Amount
		}
		for _, r := range in.CoinHistory.Received {
			recv[[2]string{r.FromUser, user}] += r.Amount
		}
	}
	if want := 1000 * actors.Coins(len(tokens)); total != want {
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

// AuditDB runs persist.Audit on the database.
func AuditDB(tb testing.TB, dbURL string, users int) {
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

// DBKeys returns every idempotency key stored with a change of users, and
// how many changes of theirs the ledgers hold (users nil: everyone's).
func DBKeys(tb testing.TB, dbURL string, users []string) (keys map[string]bool, changes int) {
	tb.Helper()
	ctx := context.Background()
	pool, err := persist.Open(ctx, dbURL, 2)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	all := users == nil
	rows, err := pool.Query(ctx, `SELECT user_name || '/' || key FROM idempotency_keys WHERE $1 OR user_name = ANY($2)`, all, users)
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
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM purchases WHERE $1 OR user_name = ANY($2))
  + (SELECT count(*) FROM transfers WHERE $1 OR from_user = ANY($2))`, all, users).Scan(&changes); err != nil {
		tb.Fatal(err)
	}
	return keys, changes
}

// KeyedOp is a keyed change a test sent and what its answer said.
type KeyedOp struct {
	User, Key string
	Acked     bool // answered 2xx: must be stored exactly once
	Refused   bool // answered 4xx: must not be stored
	Op        any  // printed when a check fails
}

// CheckKeys: every acknowledged op is in the database, no refused op is,
// no key nobody asked for is, and the ledgers hold exactly one change per
// key — nothing applied twice or without its key (users nil: everyone's).
func CheckKeys(tb testing.TB, dbURL string, users []string, ops []KeyedOp) {
	tb.Helper()
	keys, changes := DBKeys(tb, dbURL, users)
	asked := map[string]bool{}
	for _, o := range ops {
		k := o.User + "/" + o.Key
		asked[k] = true
		switch {
		case o.Acked && !keys[k]:
			tb.Errorf("acknowledged op lost: %+v", o.Op)
		case o.Refused && keys[k]:
			tb.Errorf("refused op applied: %+v", o.Op)
		}
	}
	for k := range keys {
		if !asked[k] {
			tb.Errorf("database has a change nobody asked for: %s", k)
		}
	}
	if changes != len(keys) {
		tb.Errorf("ledgers hold %d changes for %d keys: a change was applied twice or without its key", changes, len(keys))
	}
}

// Seed returns the seed a test's random schedule uses: $env when set,
// else a fresh one. It logs the seed and the command that replays it
// (pkg is the package's path, e.g. ./bench/faults).
func Seed(tb testing.TB, env, pkg string) uint64 {
	tb.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv(env); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			tb.Fatalf("%s: %v", env, err)
		}
		s = n
	}
	tb.Logf("seed %d (replay: %s=%d go test -run '^%s$' %s)", s, env, s, tb.Name(), pkg)
	return s
}

// Latencies summarises durations.
type Latencies []time.Duration

func (l Latencies) Pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(Latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return s[i]
}

func (l Latencies) String() string {
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(l), l.Pct(.5).Round(time.Microsecond),
		l.Pct(.99).Round(time.Microsecond), l.Pct(1).Round(time.Microsecond))
}

// RSSBytes reads a process's resident set size from /proc.
func RSSBytes(pid int) (int64, error) {
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

// AuditBatches fails when the ledger rows of one journal batch were
// written by more than one transaction: the batch was applied twice.
func AuditBatches(tb testing.TB, dbURL string) {
	tb.Helper()
	ctx := context.Background()
	pool, err := persist.Open(ctx, dbURL, 2)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	var dup string
	err = pool.QueryRow(ctx, `SELECT coalesce(string_agg(batch::text, ','), '') FROM (
  SELECT batch FROM (SELECT batch, xmin::text x FROM purchases UNION ALL SELECT batch, xmin::text FROM transfers) l
  GROUP BY batch HAVING count(DISTINCT x) > 1) d`).Scan(&dup)
	if err != nil {
		tb.Fatal(err)
	}
	if dup != "" {
		tb.Fatalf("journal batches written by two transactions (applied twice): %s", dup)
	}
}

// AuditMemoryMatchesDB fails when a user's balance seen through the API
// (the actor's memory) differs from the database's.
func AuditMemoryMatchesDB(tb testing.TB, c *Client, tokens map[string]string, dbURL string) {
	tb.Helper()
	ctx := context.Background()
	pool, err := persist.Open(ctx, dbURL, 2)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	for user, tok := range tokens {
		r := c.Do("GET", "/api/info", tok, "", nil)
		if r.Code != 200 {
			tb.Fatalf("info %s: %d %s", user, r.Code, r.Body)
		}
		in, err := actorstest.DecodeInfo(r.Body)
		if err != nil {
			tb.Fatalf("info %s %s: %v", user, r.Body, err)
		}
		var db int64
		if err := pool.QueryRow(ctx, `SELECT balance FROM users WHERE name = $1`, user).Scan(&db); err != nil {
			tb.Fatal(err)
		}
		if actors.Coins(db) != in.Coins {
			tb.Errorf("%s: API says %d coins, database %d", user, in.Coins, db)
		}
	}
}
