package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape returns every sample of the server's /metrics as name{labels} →
// value.
func (s *server) scrape() map[string]float64 {
	s.tb.Helper()
	code, body := s.do("GET", "/metrics", "", nil)
	if code != 200 {
		s.tb.Fatalf("/metrics: %d", code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			s.tb.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// family sums every sample whose name (before labels) is name.
func family(samples map[string]float64, name string) (sum float64, found bool) {
	for k, v := range samples {
		base := k
		if i := strings.IndexByte(k, '{'); i >= 0 {
			base = k[:i]
		}
		if base == name {
			sum += v
			found = true
		}
	}
	return sum, found
}

// traffic exercises every endpoint, a 404 and (the first time) a wrong
// password.
func traffic(s *server, first bool) {
	alice, bob := s.auth("usr_alpha", "pw"), s.auth("usr_beta", "pw")
	s.auth("usr_alpha", "pw") // login of a known user
	if first {
		s.do("POST", "/api/auth", "", map[string]string{"username": "usr_alpha", "password": "wrong"})
	}
	s.buy(alice, "cup")
	s.send(alice, "usr_beta", 5)
	s.send(bob, "usr_alpha", 2)
	s.info(alice)
	s.do("GET", "/nope", "", nil)
}

func TestMetricsExposedAndMoving(t *testing.T) {
	cfg := testConfig(mustDatabase(t))
	cfg.IdleTTL = 50 * time.Millisecond // so passivations happen in the test
	cfg.MaxConns = 8                    // so the test can make the cap shed
	s := mustStart(t, cfg)
	traffic(s, true)
	idempotencyTraffic(s)
	mustShedAtConnCap(t, s, cfg.MaxConns)
	// Moved: counters and histogram counts > 0 after the traffic above.
	moved := []string{
		"merch_http_requests_total", "merch_http_request_duration_seconds_count",
		"merch_actor_mailbox_wait_seconds_count", "merch_actor_messages_total",
		"merch_actor_process_seconds_count", "merch_actor_activations_total",
		"merch_journal_batch_records_count", "merch_journal_flush_seconds_count",
		"merch_journal_records_total", "merch_auth_hash_seconds_count",
		"go_goroutines", "process_resident_memory_bytes", "go_gc_duration_seconds_count",
		"merch_idempotency_replays_total", "merch_idempotency_conflicts_total", "merch_shed_total",
		"merch_auth_token_cache_hits_total", "merch_auth_token_cache_misses_total",
		"merch_db_pool_acquires_total", "merch_db_pool_max_conns", "merch_db_pool_total_conns",
		"merch_journal_queue_capacity", "merch_auth_hash_queue_capacity", "merch_ready", "merch_build_info",
		"merch_journal_one_copy_records_total", // the test's PostgreSQL has no standby
	}
	// Present (gauges that may be 0 when idle, the failure counter).
	present := []string{
		"merch_actor_mailbox_depth", "merch_actor_mailbox_depth_max", "merch_actor_active",
		"merch_journal_queue_depth", "merch_journal_failures_total", "merch_auth_hash_queue_depth",
		"merch_actor_passivations_total", "merch_actor_panics_total", "merch_idempotency_in_flight_total",
		"merch_db_pool_acquired_conns", "merch_db_pool_idle_conns", "merch_db_pool_empty_acquires_total",
		"merch_db_pool_acquire_wait_seconds_total", "merch_db_synchronous_standby", "merch_journal_unconfirmed_total",
	}
	samples := s.scrape()
	for _, name := range moved {
		if v, ok := family(samples, name); !ok || v <= 0 {
			t.Errorf("%s: found=%v value=%v, want > 0", name, ok, v)
		}
	}
	for _, name := range present {
		if _, ok := family(samples, name); !ok {
			t.Errorf("%s missing", name)
		}
	}
	for _, want := range []string{
		`merch_http_requests_total{code="200",route="auth"}`, `merch_http_requests_total{code="401",route="auth"}`,
		`merch_http_requests_total{code="404",route="other"}`, `merch_actor_messages_total{type="credit"}`,
		`merch_journal_records_total{kind="transferred"}`, `merch_journal_records_total{kind="registered"}`,
		`merch_shed_total{reason="max_conns"}`,
	} {
		if samples[want] <= 0 {
			t.Errorf("%s = %v, want > 0", want, samples[want])
		}
	}
	for k := range samples {
		if strings.Contains(k, `"usr_`) {
			t.Errorf("per-user label in %s", k)
		}
	}
	// Every reason is exported from the start, so alerts see the series.
	for _, reason := range []string{"journal_queue_full", "journal_unavailable", "not_durable", "hash_queue_full",
		"user_busy", "overloaded", "user_unavailable", "shutting_down", "not_owner", "no_owner",
		"forward_unknown", "max_conns", "other"} {
		if _, ok := samples[`merch_shed_total{reason="`+reason+`"}`]; !ok {
			t.Errorf("merch_shed_total{reason=%q} missing", reason)
		}
	}
	ver, rev := buildVersion()
	info := fmt.Sprintf(`merch_build_info{goversion=%q,revision=%q,version=%q}`, runtime.Version(), rev, ver)
	if samples[info] != 1 {
		t.Errorf("%s = %v, want 1", info, samples[info])
	}
	mustPassPromtool(t, s)
	// Idle actors are passivated by the janitor (every second).
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, _ := family(s.scrape(), "merch_actor_passivations_total")
		if v >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no passivation within 10 s (passivations %v)", v)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// idempotencyTraffic replays a keyed purchase and reuses its key for
// another item (422).
func idempotencyTraffic(s *server) {
	s.tb.Helper()
	tok := s.auth("usr_keyed", "pw")
	for range 2 {
		if code, body := s.doKey("GET", "/api/buy/cup", tok, "metrics-k1", nil); code != 200 {
			s.tb.Fatalf("keyed buy: %d %s", code, body)
		}
	}
	if code, body := s.doKey("GET", "/api/buy/pen", tok, "metrics-k1", nil); code != 422 {
		s.tb.Fatalf("key reused for another item: %d %s, want 422", code, body)
	}
}

// mustShedAtConnCap opens one connection more than the cap allows (the
// test's client may hold some too) and asks on each: every accepted one
// answers 401, a refused one 503.
func mustShedAtConnCap(tb testing.TB, s *server, maxConns int) {
	tb.Helper()
	addr := strings.TrimPrefix(s.base, "http://")
	refused := 0
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range maxConns + 1 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("GET /api/info HTTP/1.1\r\nHost: merch\r\n\r\n")); err != nil {
			refused++ // closed by the rejecter before the write: counted too
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			tb.Fatalf("reading an answer: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			refused++
		}
	}
	if refused == 0 {
		tb.Fatalf("%d connections over a cap of %d: none refused", len(conns), maxConns)
	}
}

// mustPassPromtool checks the exposition with promtool check metrics
// (naming, units, help, types): what Prometheus' own linter reports.
func mustPassPromtool(tb testing.TB, s *server) {
	tb.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		tb.Skip("promtool not found: install the Debian package prometheus (.ci/run does) to lint the exposition")
	}
	code, body := s.do("GET", "/metrics", "", nil)
	if code != 200 {
		tb.Fatalf("/metrics: %d", code)
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestVersionFlag: -version is answered before any other setting is read
// and prints what merch_build_info exports.
func TestVersionFlag(t *testing.T) {
	_, err := LoadConfig([]string{"-version"}, func(string) string { return "not a valid value" })
	if !errors.Is(err, errVersion) {
		t.Fatalf("LoadConfig(-version) = %v, want errVersion", err)
	}
	ver, rev := buildVersion()
	want := "version=" + ver + " revision=" + rev + " goversion=" + runtime.Version()
	if line := versionLine(); !strings.HasSuffix(line, want) {
		t.Fatalf("versionLine() = %q, want it to end in %q", line, want)
	}
}

// TestVersionBinary builds the command with a -X version and runs
// -version: exit 0, that version on stdout, whatever the environment holds.
func TestVersionBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "merch-store")
	build := exec.Command("go", "build",
		"-ldflags=-X main.version=v9.9.9-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-version")
	cmd.Env = append(os.Environ(), "HTTP_ADDR=not an address", "JWT_SECRET=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("merch-store -version: %v\nstderr: %s", err, stderr.String())
	}
	if out := stdout.String(); !strings.Contains(out, "version=v9.9.9-test ") || !strings.Contains(out, "goversion=go") {
		t.Fatalf("merch-store -version printed %q", out)
	}
}

// TestDashboardQueriesReturnData starts a real Prometheus scraping the
// server and asks it every expression of every panel of the Grafana
// dashboard, its variables replaced as Grafana would: a dashboard can
// never reference a metric that does not exist. The dashboard must pass
// the linter's rules first (dashboard_test.go).
func TestDashboardQueriesReturnData(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("the dashboard test needs the prometheus binary (Debian package prometheus; .ci/run installs it)")
	}
	for _, p := range dashboardProblems(mustDashboard(t, dashboardPath)) {
		t.Error(p)
	}
	// Grafana's variables: $__rate_interval is at least four scrape
	// intervals (the test scrapes every second), the test's job, any
	// instance.
	vars := strings.NewReplacer("$__rate_interval", "10s", "$job", "merch-store", "$instance", ".*")
	exprs := dashboardExprs(t, dashboardPath)
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found in the dashboard", len(exprs))
	}
	for i, e := range exprs {
		if exprs[i] = vars.Replace(e); strings.Contains(exprs[i], "$") {
			t.Fatalf("a variable the test does not replace: %s", e)
		}
	}
	s := mustStart(t, clusterConfig(mustDatabase(t), "dash")) // a one-node cluster: every panel has data
	traffic(s, true)
	prom := startPrometheus(t, promBin, strings.TrimPrefix(s.admin, "http://"))
	// Wait for enough scrapes that rate() over 1m has two samples, while
	// keeping traffic going so quantiles have data.
	deadline := time.Now().Add(60 * time.Second)
	for !promHasData(t, prom, `count_over_time(up{job="merch-store"}[1m]) >= 3`) {
		if time.Now().After(deadline) {
			t.Fatal("Prometheus did not scrape the server 3 times within 60 s")
		}
		traffic(s, false)
		time.Sleep(200 * time.Millisecond)
	}
	traffic(s, false)
	for !promHasData(t, prom, `count_over_time(up{job="merch-store"}[1m]) >= 4`) {
		if time.Now().After(deadline) {
			t.Fatal("no fourth scrape")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, e := range exprs {
		if !promHasData(t, prom, e) {
			t.Errorf("dashboard query returns no data: %s", e)
		}
	}
}

// dashboardExprs walks the dashboard JSON (rows may nest panels) and
// returns every target's expr.
func dashboardExprs(tb testing.TB, path string) []string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var root any
	if err := json.Unmarshal(b, &root); err != nil {
		tb.Fatal(err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if targets, ok := x["targets"].([]any); ok {
				for _, tg := range targets {
					if m, ok := tg.(map[string]any); ok {
						if e, ok := m["expr"].(string); ok && e != "" {
							out = append(out, e)
						}
					}
				}
			}
			for _, k := range []string{"panels", "rows"} {
				walk(x[k])
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(root)
	return out
}

func startPrometheus(tb testing.TB, bin, target string) string {
	tb.Helper()
	dir := tb.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"+
		"  - job_name: merch-store\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		tb.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if tb.Failed() {
			tb.Logf("prometheus log:\n%s", log.String())
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("prometheus not ready: %v\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// promHasData runs an instant query and reports whether it returned at
// least one series.
func promHasData(tb testing.TB, base, expr string) bool {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Status string
		Error  string
		Data   struct {
			Result []json.RawMessage
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		tb.Fatal(err)
	}
	if out.Status != "success" {
		tb.Fatalf("query %s: %s", expr, out.Error)
	}
	return len(out.Data.Result) > 0
}
