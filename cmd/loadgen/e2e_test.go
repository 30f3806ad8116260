package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// testConfig is a short closed-model run against addr.
func testConfig(t *testing.T, addr, mixSpec string) Config {
	t.Helper()
	m, err := parseMix(mixSpec)
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Addr: addr, Users: 20, Prefix: "t", Password: "pw", SetupC: 8,
		SetupTimeout: 5 * time.Second, C: 8, Mix: m, Duration: time.Second,
		Timeout: 2 * time.Second, FundsMsg: "insufficient", Quiet: true,
	}
}

// checkConsistent asserts the per-report invariants that hold for any run.
func checkConsistent(t *testing.T, rep *Report) {
	t.Helper()
	var count, expected, errs uint64
	for _, name := range opNames {
		e, ok := rep.Endpoints[name]
		if !ok {
			t.Fatalf("endpoint %s missing from report", name)
		}
		if got := sumStatus(e.Status) + e.Timeouts + e.ConnErrors; got != e.Count {
			t.Errorf("%s: statuses+timeouts+conn errors = %d, count = %d", name, got, e.Count)
		}
		if e.Errors != e.HTTPErrors+e.Timeouts+e.ConnErrors {
			t.Errorf("%s: errors %d != parts", name, e.Errors)
		}
		if e.Expected400 > e.Status["400"] {
			t.Errorf("%s: expected_400 %d > status 400 %d", name, e.Expected400, e.Status["400"])
		}
		count += e.Count
		expected += e.Expected400
		errs += e.Errors
	}
	if rep.Total.Count != count || rep.Total.Expected400 != expected || rep.Total.Errors != errs {
		t.Errorf("total %+v does not add up: count %d expected %d errors %d", rep.Total, count, expected, errs)
	}
}

func TestEndToEndClosedModel(t *testing.T) {
	// 60 coins each: users run out quickly, so insufficient funds happens.
	f := newFakeAPI(60)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=40,buy=30,send=20,auth=10")
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, rep)
	served, insufficient, coins := f.snapshot()
	if rep.Total.Count < 100 {
		t.Fatalf("only %d requests in 1 s against an in-memory fake", rep.Total.Count)
	}
	if rep.Total.Errors != 0 {
		t.Errorf("errors against the fake: %+v", rep.Total)
	}
	if rep.Total.Expected400 == 0 || rep.Total.Expected400 != uint64(insufficient) {
		t.Errorf("expected 400s: report %d, fake sent %d", rep.Total.Expected400, insufficient)
	}
	// With no warm-up every request the fake served after setup is in the
	// report: exactly once, under the right endpoint.
	for _, name := range opNames {
		want := served[name]
		if name == "auth" {
			want -= cfg.Users
		}
		if got := rep.Endpoints[name].Count; got != uint64(want) {
			t.Errorf("%s: report counted %d, fake served %d", name, got, want)
		}
	}
	// Sends move coins between users; buys only destroy them.
	if coins > cfg.Users*60 || rep.Endpoints["send"].Status["200"] == 0 {
		t.Errorf("coins after run %d, successful sends %d", coins, rep.Endpoints["send"].Status["200"])
	}
	if rep.UnfinishedWorkers != 0 || rep.Interrupted || rep.WindowS < 0.99 || rep.WindowS > 1.01 {
		t.Errorf("run bookkeeping: %+v", rep)
	}
}

func TestEndToEndWarmupNotRecorded(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	cfg.Warmup, cfg.Duration = 500*time.Millisecond, 500*time.Millisecond
	cfg.Quiet, cfg.Progress = false, 100*time.Millisecond
	var progress bytes.Buffer
	rep, err := run(context.Background(), cfg, &progress)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, rep)
	served, _, _ := f.snapshot()
	if got := rep.Endpoints["info"].Count; got == 0 || got >= uint64(served["info"]) {
		t.Errorf("recorded %d of %d served: warm-up requests must be excluded", got, served["info"])
	}
	out := progress.String()
	for _, want := range []string{"setup: 20 users logged in", "warm-up", "measure", "req/s", "errors 0", "p99"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress output lacks %q:\n%s", want, out)
		}
	}
}

func TestEndToEndOpenModelReportsMissed(t *testing.T) {
	f := newFakeAPI(1000)
	f.delay = 20 * time.Millisecond // each worker can do at most 50 req/s
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	cfg.C, cfg.Rate = 2, 400
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, rep)
	info := rep.Endpoints["info"]
	// 2 workers x 1 s / 20 ms bounds what can be sent; the rest of the 400
	// arrivals must show up as missed, not be queued.
	if info.Count > 2*50+2 {
		t.Errorf("sent %d requests, more than 2 slow workers can do", info.Count)
	}
	if info.Missed < 250 || rep.Total.Missed != info.Missed {
		t.Errorf("missed = %d (total %d), want most of 400 arrivals", info.Missed, rep.Total.Missed)
	}
	if arrivals := info.Count + info.Missed; arrivals < 380 || arrivals > 400 {
		t.Errorf("sent+missed = %d, want ~400 arrivals", arrivals)
	}
	if info.Errors != 0 {
		t.Errorf("errors: %+v", info)
	}
}

func TestEndToEndOpenModelKeepsUp(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	cfg.C, cfg.Rate = 8, 200
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, rep)
	// A fast fake and idle workers: nearly every arrival is sent.
	if info := rep.Endpoints["info"]; info.Count < 190 || info.Count+info.Missed > 200 {
		t.Errorf("count %d missed %d, want ~200 sent", info.Count, info.Missed)
	}
}

func TestEndToEndTimeoutsAreErrors(t *testing.T) {
	f := newFakeAPI(1000)
	f.hold = make(chan struct{}) // released when the test ends
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	cfg.Duration, cfg.Timeout, cfg.C = 300*time.Millisecond, 50*time.Millisecond, 2
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, rep)
	info := rep.Endpoints["info"]
	if info.Count == 0 || info.Timeouts != info.Count || info.Errors != info.Count {
		t.Errorf("want only timeouts: %+v", info)
	}
	if info.Latency.P50 < 50_000 {
		t.Errorf("timeouts recorded with p50 %d µs, want >= the 50 ms timeout", info.Latency.P50)
	}
}

func TestEndToEndHardStop(t *testing.T) {
	f := newFakeAPI(1000)
	f.hold = make(chan struct{}) // requests hang until the test ends
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	cfg.C, cfg.Duration, cfg.Timeout, cfg.Grace = 3, 200*time.Millisecond, time.Minute, 200*time.Millisecond
	start := time.Now()
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("run took %v despite the hard stop", took)
	}
	if rep.UnfinishedWorkers != 3 || rep.Total.Count != 0 {
		t.Errorf("unfinished %d count %d, want 3 hung workers and nothing recorded", rep.UnfinishedWorkers, rep.Total.Count)
	}
}

func TestEndToEndInterrupted(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	cfg.Duration = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel as soon as the fake sees the first load request: the run must
	// end promptly and still record that in-flight request.
	go func() {
		<-f.firstLoad
		cancel()
	}()
	rep, err := run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, rep)
	if !rep.Interrupted || rep.WindowS > 60 || rep.Total.Count == 0 {
		t.Errorf("interrupted %v window %.1fs count %d", rep.Interrupted, rep.WindowS, rep.Total.Count)
	}
}

func TestSetupFailsOnWrongPassword(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	cfg.Duration = 100 * time.Millisecond
	if _, err := run(context.Background(), cfg, io.Discard); err != nil {
		t.Fatal(err)
	}
	cfg.Password = "another"
	_, err := run(context.Background(), cfg, io.Discard)
	var se *setupError
	if err == nil || !errors.As(err, &se) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("err = %v, want setup error mentioning 401", err)
	}
}

func TestRealMainExitCodesAndJSON(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	var out, errOut bytes.Buffer
	args := []string{"-addr", addr, "-users", "4", "-c", "2", "-d", "300ms", "-warmup", "100ms", "-json", "-quiet"}
	if code := realMain(args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errOut.String())
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bad JSON %q: %v", out.String(), err)
	}
	if rep.Config.Addr != addr || rep.Config.Mix["info"] != 50 || rep.Config.Model != "closed" || rep.Total.Count == 0 {
		t.Errorf("report %+v", rep)
	}
	if errOut.Len() != 0 {
		t.Errorf("-quiet still wrote %q", errOut.String())
	}

	if code := realMain([]string{"-c", "-5"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("bad flags: exit %d, want 2", code)
	}
	args = []string{"-addr", addr, "-users", "4", "-password", "wrong", "-d", "100ms", "-quiet"}
	if code := realMain(args, io.Discard, io.Discard); code != 1 {
		t.Errorf("failed setup: exit %d, want 1", code)
	}
}

func TestTextReport(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1,buy=1")
	cfg.Duration = 200 * time.Millisecond
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := writeText(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"endpoint", "p99.9 ms", "info", "buy", "total", "200:"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestStaticServerCeiling(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveStatic(ctx, ln) }()
	cfg := testConfig(t, ln.Addr().String(), "info=50,buy=25,send=25")
	cfg.NoSetup, cfg.Duration = true, 300*time.Millisecond
	rep, err := run(context.Background(), cfg, io.Discard)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("serveStatic: %v", err)
	}
	checkConsistent(t, rep)
	if rep.Total.Count == 0 || rep.Total.Status["200"] != rep.Total.Count || !rep.Setup.Skipped {
		t.Errorf("static run: %+v", rep.Total)
	}
}
