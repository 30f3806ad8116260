package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWritesCarryUniqueIdempotencyKeys(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=30,buy=30,send=30,auth=10")
	cfg.Duration = 500 * time.Millisecond
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Config.Keys {
		t.Error("report says keys are off by default")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.served["buy"] == 0 || f.served["send"] == 0 {
		t.Fatalf("no writes served: %v", f.served)
	}
	for _, ep := range []string{"buy", "send"} {
		if f.keyed[ep] != f.served[ep] {
			t.Errorf("%s: %d of %d requests carried an Idempotency-Key, want all", ep, f.keyed[ep], f.served[ep])
		}
	}
	for _, ep := range []string{"info", "auth"} {
		if f.keyed[ep] != 0 {
			t.Errorf("%s: %d requests carried an Idempotency-Key, want none", ep, f.keyed[ep])
		}
	}
	if want := f.served["buy"] + f.served["send"]; len(f.keys) != want {
		t.Errorf("%d distinct keys for %d writes", len(f.keys), want)
	}
	for k, n := range f.keys {
		if n != 1 {
			t.Errorf("key %q sent %d times", k, n)
		}
	}
	if len(f.badKeys) > 0 {
		t.Errorf("keys the service would refuse: %q", f.badKeys)
	}
}

func TestKeysDifferBetweenRuns(t *testing.T) {
	// Keys are honoured for 24 hours per user: a second run with the same
	// users must not replay the first one's keys.
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "buy=1")
	cfg.C, cfg.Duration = 1, 100*time.Millisecond
	for range 2 {
		if _, err := run(context.Background(), cfg, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keys) != f.served["buy"] || f.served["buy"] < 2 {
		t.Errorf("%d distinct keys for %d buys over two runs", len(f.keys), f.served["buy"])
	}
}

func TestKeysOff(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	var out bytes.Buffer
	args := []string{"-addr", addr, "-users", "4", "-c", "2", "-d", "200ms", "-warmup", "0s",
		"-mix", "buy=1,send=1", "-keys=false", "-json", "-quiet"}
	if code := realMain(args, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Config.Keys {
		t.Errorf("report keys=%v err=%v, want false", rep.Config.Keys, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keys) != 0 || f.served["buy"]+f.served["send"] == 0 {
		t.Errorf("-keys=false: %d keys over %v", len(f.keys), f.served)
	}
}

func TestThresholdsExitCodes(t *testing.T) {
	f := newFakeAPI(1000)
	f.delay = 20 * time.Millisecond // p99 >= 20 ms
	f.failEvery = 2                 // half the load requests get a 503
	addr := startFake(t, f)
	base := []string{"-addr", addr, "-users", "4", "-c", "2", "-d", "300ms", "-warmup", "0s", "-mix", "info=1", "-quiet"}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantLine string // in stderr
	}{
		{"no thresholds", nil, 0, ""},
		{"p99 violated", []string{"-max-p99", "5ms"}, 3, "FAIL: thresholds violated: p99 "},
		{"p99 met", []string{"-max-p99", "10s"}, 0, ""},
		{"error rate violated", []string{"-max-error-rate", "0.4"}, 3, "> -max-error-rate 0.4"},
		{"zero errors allowed", []string{"-max-error-rate", "0"}, 3, "> -max-error-rate 0"},
		{"error rate met", []string{"-max-error-rate", "0.6"}, 0, ""},
		{"both violated", []string{"-max-p99", "5ms", "-max-error-rate", "0.1"}, 3, "; error rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errOut bytes.Buffer
			code := realMain(append(append([]string{}, base...), tt.args...), io.Discard, &errOut)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.wantCode, errOut.String())
			}
			if tt.wantLine != "" && !strings.Contains(errOut.String(), tt.wantLine) {
				t.Errorf("stderr %q lacks %q", errOut.String(), tt.wantLine)
			}
			if tt.wantLine == "" && errOut.Len() != 0 {
				t.Errorf("-quiet pass wrote %q", errOut.String())
			}
		})
	}
}

func TestThresholdsInJSONReport(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	var out, errOut bytes.Buffer
	args := []string{"-addr", addr, "-users", "4", "-c", "2", "-d", "200ms", "-warmup", "0s", "-mix", "info=1",
		"-max-p99", "10s", "-max-error-rate", "0.01", "-json"}
	if code := realMain(args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	th := rep.Thresholds
	if th == nil || !th.Passed || th.MaxP99us == nil || *th.MaxP99us != 10_000_000 ||
		th.MaxErrorRate == nil || *th.MaxErrorRate != 0.01 || th.P99us != rep.Total.Latency.P99 {
		t.Errorf("thresholds %+v", th)
	}
	if !strings.Contains(errOut.String(), "thresholds passed") {
		t.Errorf("stderr lacks the pass line: %s", errOut.String())
	}
}

func TestThresholdsFailWithoutRequests(t *testing.T) {
	th := thresholds{MaxP99: time.Second}
	if r := th.check(EpReport{}); r.Passed || len(r.Failures) != 1 || r.Failures[0] != "no measured requests" {
		t.Errorf("empty run: %+v", r)
	}
	if r := (thresholds{}).check(EpReport{}); r != nil {
		t.Errorf("no thresholds gave %+v", r)
	}
}

func TestParseStages(t *testing.T) {
	tests := []struct {
		in      string
		rate    bool
		total   time.Duration
		peak    float64
		wantErr string
	}{
		{in: "10s:100,30s:400,10s:0", total: 50 * time.Second, peak: 400},
		{in: "1m:50/s, 0s:200/s ,30s:200/s", rate: true, total: 90 * time.Second, peak: 200},
		{in: "1s:2.5/s", rate: true, total: time.Second, peak: 2.5},
		{in: "10s", wantErr: "want DURATION:TARGET"},
		{in: "x:10", wantErr: "bad duration"},
		{in: "-1s:10", wantErr: "bad duration"},
		{in: "1s:-3", wantErr: "target must be"},
		{in: "1s:1.5", wantErr: "whole number"},
		{in: "1s:10,1s:10/s", wantErr: "one unit"},
		{in: "0s:10", wantErr: "more than 0s"},
		{in: "1s:0,2s:0", wantErr: "every target is 0"},
		{in: "1s:1000000", wantErr: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := parseStages(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.rate != tt.rate || p.total != tt.total || p.peak() != tt.peak {
				t.Errorf("rate %v total %v peak %v", p.rate, p.total, p.peak())
			}
		})
	}
}

func TestProfileRampsLinearly(t *testing.T) {
	p, err := parseStages("10s:100,0s:300,10s:300,10s:0")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		at   time.Duration
		want float64
	}{
		{0, 0}, {5 * time.Second, 50}, {10*time.Second - time.Millisecond, 99.99},
		{10 * time.Second, 300}, {15 * time.Second, 300}, {25 * time.Second, 150}, {30 * time.Second, 0}, {time.Hour, 0},
	}
	for _, tt := range tests {
		if got := p.at(tt.at); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("at(%v) = %v, want %v", tt.at, got, tt.want)
		}
	}
	if p.workers(5*time.Second) != 50 || !p.active(49, 5*time.Second) || p.active(50, 5*time.Second) {
		t.Errorf("workers at 5s: %d", p.workers(5*time.Second))
	}
	// Worker 149 joins when the jump to 300 happens; worker 299 leaves
	// once the ramp down falls below 299.5.
	if at, ok := p.reaches(time.Second, 149.5); !ok || at != 10*time.Second {
		t.Errorf("reaches 149.5 at %v %v, want 10s", at, ok)
	}
	if at, ok := p.reaches(time.Second, 50.5); !ok || at != 5050*time.Millisecond {
		t.Errorf("reaches 50.5 at %v %v, want 5.05s", at, ok)
	}
	if _, ok := p.reaches(21*time.Second, 299.5); ok {
		t.Error("reaches 299.5 after the ramp down started")
	}
}

func TestProfileArrivals(t *testing.T) {
	// 0 to 100/s over 1 s: 50 arrivals, the n-th at sqrt(n/50) s.
	p, err := parseStages("1s:100/s")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ {
		at, ok := p.arrivalAt(float64(n))
		if !ok {
			break
		}
		want := time.Duration(math.Sqrt(float64(n)/50) * float64(time.Second))
		if d := at - want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("arrival %d at %v, want %v", n, at, want)
		}
	}
	if n != 50 {
		t.Errorf("%d arrivals, want 50", n)
	}
	// A constant rate keeps the old schedule: arrival i at i/rate.
	c := constProfile(true, 200, time.Second)
	for i := range 200 {
		if at, ok := c.arrivalAt(float64(i)); !ok || at != time.Duration(float64(i)*float64(time.Second)/200) {
			t.Fatalf("constant arrival %d at %v %v", i, at, ok)
		}
	}
	if _, ok := c.arrivalAt(200); ok {
		t.Error("arrival past the end")
	}
}

func TestParseFlagsStages(t *testing.T) {
	cfg, err := parseFlags([]string{"-stages", "1s:10,2s:40"}, io.Discard)
	if err != nil || cfg.C != 40 || cfg.Rate != 0 || cfg.Duration != 3*time.Second || cfg.Warmup != 0 {
		t.Errorf("closed stages: %+v %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"-stages", "1s:10/s,2s:40/s", "-c", "8", "-warmup", "1s"}, io.Discard)
	if err != nil || cfg.C != 8 || cfg.Rate != 40 || cfg.Duration != 2*time.Second || cfg.Warmup != time.Second {
		t.Errorf("open stages: %+v %v", cfg, err)
	}
	for args, want := range map[string]string{
		"-stages 1s:10 -d 5s":        "replaces -d",
		"-stages 1s:10 -rate 5":      "replaces -rate",
		"-stages 1s:10 -c 5":         "drop -c",
		"-stages 1s:10 -warmup 1s":   "nothing of -stages",
		"-series out.txt":            "name it .csv",
		"-max-error-rate 1.5":        "fraction",
		"-max-p99 -1s":               "-max-p99 must be",
		"-interval 0s":               "-interval must be",
		"-stages 1s:10,1s:10/s -c 1": "one unit",
	} {
		if _, err := parseFlags(strings.Fields(args), io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want containing %q", args, err, want)
		}
	}
}

func TestClosedStagesChangeConcurrency(t *testing.T) {
	f := newFakeAPI(1000)
	f.delay = 5 * time.Millisecond // service time: workers overlap when there are several
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	p, err := parseStages("0s:1,600ms:1,0s:4,400ms:4")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Stages, cfg.C, cfg.Duration = p, 4, p.total
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, rep)
	f.mu.Lock()
	defer f.mu.Unlock()
	first := f.arrivals[0].at
	var peakEarly, peakLate int64
	for _, a := range f.arrivals {
		// The first request starts with the phase; allow 350 ms for a slow
		// start before the second stage begins at 600 ms.
		if a.at.Sub(first) < 250*time.Millisecond {
			peakEarly = max(peakEarly, a.inflight)
		} else {
			peakLate = max(peakLate, a.inflight)
		}
	}
	if peakEarly != 1 {
		t.Errorf("%d requests in flight during the 1-worker stage, want 1", peakEarly)
	}
	if peakLate < 2 || peakLate > 4 {
		t.Errorf("%d requests in flight at most during the 4-worker stage, want 2 to 4", peakLate)
	}
}

func TestOpenStagesChangeRate(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	// 50/s for 0.5 s, then 300/s for 0.5 s: 25 + 150 arrivals.
	p, err := parseStages("0s:50/s,500ms:50/s,0s:300/s,500ms:300/s")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Stages, cfg.Rate, cfg.Duration = p, 300, p.total
	cfg.Progress = 100 * time.Millisecond
	cfg.Series = filepath.Join(t.TempDir(), "s.jsonl")
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, rep)
	// At most 175; a scheduler woken late at the very end may lose the
	// last few (a constant 50/s would give 50, 300/s 300).
	if info := rep.Endpoints["info"]; info.Count+info.Missed > 175 || info.Count+info.Missed < 165 {
		t.Errorf("sent %d + missed %d, want 175 arrivals", info.Count, info.Missed)
	}
	if rep.Config.Stages != p.spec || rep.Config.Model != "open" {
		t.Errorf("report config %+v", rep.Config)
	}
	rows := readJSONSeries(t, cfg.Series)
	var early, late float64
	for _, r := range rows {
		switch {
		case r.TS <= 0.45:
			early = max(early, r.Target)
		case r.TS >= 0.55:
			late = max(late, r.Target)
		}
	}
	if early != 50 || late != 300 {
		t.Errorf("series targets %v early, %v late; rows %+v", early, late, rows)
	}
}

func TestSeriesRowsAddUp(t *testing.T) {
	for _, ext := range []string{".csv", ".jsonl"} {
		t.Run(ext, func(t *testing.T) {
			f := newFakeAPI(60) // runs out of coins: some expected 400s, which are not errors
			f.failEvery = 5
			addr := startFake(t, f)
			cfg := testConfig(t, addr, "info=50,buy=50")
			cfg.Warmup, cfg.Duration, cfg.Progress = 200*time.Millisecond, 800*time.Millisecond, 100*time.Millisecond
			cfg.Series = filepath.Join(t.TempDir(), "series"+ext)
			rep, err := run(context.Background(), cfg, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var rows []seriesRow
			if ext == ".csv" {
				rows = readCSVSeries(t, cfg.Series)
			} else {
				rows = readJSONSeries(t, cfg.Series)
			}
			if len(rows) < 4 { // 8 unless a busy machine delays ticks
				t.Fatalf("%d rows for 0.8 s at 100 ms", len(rows))
			}
			var reqs, errs uint64
			for i, r := range rows {
				reqs += r.Requests
				errs += r.Errors
				if r.TS <= 0.2 || r.IntervalS <= 0 || r.IntervalS > 0.35 || (i > 0 && r.TS <= rows[i-1].TS) {
					t.Errorf("row %d: %+v", i, r)
				}
				if r.Requests > 0 && (r.P99ms < r.P50ms || r.P50ms <= 0 || math.Abs(r.RPS-float64(r.Requests)/r.IntervalS) > 0.01*r.RPS+0.1) {
					t.Errorf("row %d: %+v", i, r)
				}
				if r.Target != float64(cfg.C) {
					t.Errorf("row %d: target %v, want the %d workers", i, r.Target, cfg.C)
				}
			}
			if reqs != rep.Total.Count || errs != rep.Total.Errors || errs == 0 {
				t.Errorf("rows add up to %d requests, %d errors; report %d, %d", reqs, errs, rep.Total.Count, rep.Total.Errors)
			}
		})
	}
}

func TestSeriesBadPathFailsBeforeSetup(t *testing.T) {
	f := newFakeAPI(1000)
	addr := startFake(t, f)
	cfg := testConfig(t, addr, "info=1")
	cfg.Series = filepath.Join(t.TempDir(), "no-such-dir", "s.csv")
	if _, err := run(context.Background(), cfg, io.Discard); err == nil {
		t.Fatal("run with an unwritable -series succeeded")
	}
	if served, _, _ := f.snapshot(); served["auth"] != 0 {
		t.Errorf("setup ran before the series file failed: %v", served)
	}
}

func readJSONSeries(t *testing.T, path string) []seriesRow {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var rows []seriesRow
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		var r seriesRow
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		rows = append(rows, r)
	}
	return rows
}

func readCSVSeries(t *testing.T, path string) []seriesRow {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	recs, err := csv.NewReader(fh).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || strings.Join(recs[0], ",")+"\n" != seriesHeader {
		t.Fatalf("header %v", recs)
	}
	var rows []seriesRow
	for _, rec := range recs[1:] {
		v := make([]float64, len(rec))
		for i, s := range rec {
			if v[i], err = strconv.ParseFloat(s, 64); err != nil {
				t.Fatalf("row %v: %v", rec, err)
			}
		}
		rows = append(rows, seriesRow{TS: v[0], IntervalS: v[1], Target: v[2], Requests: uint64(v[3]),
			Errors: uint64(v[4]), RPS: v[5], P50ms: v[6], P99ms: v[7], Missed: uint64(v[8])})
	}
	return rows
}
