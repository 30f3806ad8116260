package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// Config is the complete configuration of one run; main fills it from
// flags and tests build it directly.
type Config struct {
	Addr         string
	AllowRemote  bool
	Users        int
	Prefix       string
	Password     string
	SetupC       int
	SetupTimeout time.Duration
	NoSetup      bool
	C            int
	Rate         float64  // > 0 selects the open model
	Stages       *profile // nil: constant load (C workers or Rate arrivals/s)
	Mix          mix
	NoKeys       bool // writes without Idempotency-Key (-keys=false)
	Duration     time.Duration
	Warmup       time.Duration
	Timeout      time.Duration
	Grace        time.Duration // wait for in-flight requests after the end; 0 means Timeout + 1s
	Progress     time.Duration // progress line and series row interval; 0 means 1s
	Series       string        // per-interval rows to this file (.csv, else JSON lines); "" = none
	Thresholds   thresholds
	FundsMsg     string
	Quiet        bool
	JSON         bool
	ServeStatic  string
}

type reportConfig struct {
	Addr        string         `json:"addr"`
	Model       string         `json:"model"`
	Concurrency int            `json:"concurrency"`
	Rate        float64        `json:"rate"`
	Users       int            `json:"users"`
	Prefix      string         `json:"prefix"`
	NoSetup     bool           `json:"no_setup"`
	Mix         map[string]int `json:"mix"`
	Stages      string         `json:"stages,omitempty"`
	Keys        bool           `json:"keys"`
	DurationS   float64        `json:"duration_s"`
	WarmupS     float64        `json:"warmup_s"`
	TimeoutS    float64        `json:"timeout_s"`
	FundsMsg    string         `json:"funds_msg"`
}

func (c *Config) reportConfig() reportConfig {
	model := "closed"
	if c.Rate > 0 {
		model = "open"
	}
	stages := ""
	if c.Stages != nil {
		stages = c.Stages.spec
	}
	return reportConfig{
		Addr: c.Addr, Model: model, Concurrency: c.C, Rate: c.Rate,
		Users: c.Users, Prefix: c.Prefix, NoSetup: c.NoSetup, Mix: c.Mix.asMap(), Keys: !c.NoKeys,
		DurationS: c.Duration.Seconds(), WarmupS: c.Warmup.Seconds(),
		TimeoutS: c.Timeout.Seconds(), FundsMsg: c.FundsMsg, Stages: stages,
	}
}

// setupError marks a failed login phase (exit code 1).
type setupError struct{ err error }

func (e *setupError) Error() string { return "setup failed: " + e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

// run performs setup and the load phase and returns the report. Progress
// goes to stderr unless cfg.Quiet. Cancelling ctx ends the run early; the
// report then covers the shortened window.
func run(ctx context.Context, cfg Config, stderr io.Writer) (*Report, error) {
	if cfg.Quiet {
		stderr = io.Discard
	}
	// Opened first: a bad path fails before minutes of setup.
	series, err := createSeries(cfg.Series, cmp.Or(cfg.Progress, time.Second))
	if err != nil {
		return nil, err
	}
	defer func() { _ = series.close() }() // on the error paths; closed and checked below
	t := newTarget(cfg.Addr, max(cfg.C, cfg.SetupC)+1, cfg.Timeout, cfg.FundsMsg)
	defer t.client.CloseIdleConnections()
	if !cfg.NoKeys {
		t.keyRun = newKeyRun()
	}
	setupStart := time.Now()
	if err := prepareUsers(ctx, t, &cfg, stderr); err != nil {
		return nil, &setupError{err}
	}
	rep := &Report{
		Config: cfg.reportConfig(),
		Setup:  setupInfo{Skipped: cfg.NoSetup, Users: len(t.users), Seconds: time.Since(setupStart).Seconds()},
	}
	rec := newRecorder(cfg.C)
	res := runLoad(ctx, t, &cfg, rec, series, stderr)
	rep.WindowS = res.window.Seconds()
	rep.Interrupted = res.interrupted
	rep.UnfinishedWorkers = res.unfinished
	rep.Endpoints, rep.Total = rec.report(res.window)
	rep.Thresholds = cfg.Thresholds.check(rep.Total)
	if err := series.close(); err != nil {
		return rep, fmt.Errorf("series %s: %w", cfg.Series, err)
	}
	return rep, nil
}

// profile is the load over time: the stages, a constant rate (so the
// scheduler has one code path), or nil for a constant number of workers.
func (c *Config) profile() *profile {
	switch {
	case c.Stages != nil:
		return c.Stages
	case c.Rate > 0:
		return constProfile(true, c.Rate, c.Warmup+c.Duration)
	}
	return nil
}

// phase holds the time boundaries of the load phase and the stop signal.
// Workers poll an atomic flag instead of ctx.Err() to keep the per-request
// path free of shared locks.
type phase struct {
	start, measureFrom, end time.Time
	stopped                 atomic.Bool
	stopCh                  chan struct{}
	once                    sync.Once
}

func (p *phase) stop() {
	p.once.Do(func() {
		p.stopped.Store(true)
		close(p.stopCh)
	})
}

// measured reports whether a request started at t is in the measured window.
func (p *phase) measured(t time.Time) bool { return !t.Before(p.measureFrom) && t.Before(p.end) }

type loadResult struct {
	window      time.Duration
	interrupted bool
	unfinished  int
}

// runLoad drives the workers until the planned end (or ctx is cancelled),
// then waits at most the grace period for in-flight requests. That hard
// stop bounds the run even if requests hang past their timeout.
func runLoad(ctx context.Context, t *target, cfg *Config, rec *recorder, series *seriesWriter, stderr io.Writer) loadResult {
	now := time.Now()
	ph := &phase{start: now, measureFrom: now.Add(cfg.Warmup), stopCh: make(chan struct{})}
	ph.end = ph.measureFrom.Add(cfg.Duration)

	var wg sync.WaitGroup
	var running atomic.Int64
	startWorkers(t, cfg, rec, ph, &wg, &running)
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	// The progress printer is joined before returning so it never writes
	// to stderr concurrently with the caller.
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	target := cfg.profile()
	if target == nil {
		target = constProfile(false, float64(cfg.C), cfg.Warmup+cfg.Duration)
	}
	pr := progress{w: stderr, rec: rec, ph: ph, every: cfg.Progress, open: cfg.Rate > 0,
		stages: cfg.Stages, target: target, series: series}
	progressWG.Go(func() { pr.loop(progressDone) })

	endTimer := time.NewTimer(time.Until(ph.end))
	defer endTimer.Stop()
	interrupted := false
	select {
	case <-endTimer.C:
	case <-ctx.Done():
		interrupted = true
	case <-allDone:
	}
	stopAt := time.Now()
	ph.stop()

	grace := cfg.Grace
	if grace <= 0 {
		grace = cfg.Timeout + time.Second
	}
	graceTimer := time.NewTimer(grace)
	defer graceTimer.Stop()
	hardStop := false
	select {
	case <-allDone:
	case <-graceTimer.C:
		hardStop = true
	}
	close(progressDone)
	progressWG.Wait()
	if hardStop {
		fmt.Fprintf(stderr, "hard stop: %d workers still busy after %v grace\n", running.Load(), grace)
	}
	if stopAt.After(ph.end) {
		stopAt = ph.end
	}
	window := stopAt.Sub(ph.measureFrom)
	return loadResult{window: max(window, 0), interrupted: interrupted, unfinished: int(running.Load())}
}

// startWorkers launches cfg.C workers, plus the arrival scheduler in the
// open model.
func startWorkers(t *target, cfg *Config, rec *recorder, ph *phase, wg *sync.WaitGroup, running *atomic.Int64) {
	var arrivals chan arrival
	prof := cfg.profile()
	if cfg.Rate > 0 {
		// Unbuffered on purpose: a send succeeds only if a worker is idle
		// right now, so arrivals can never queue up.
		arrivals = make(chan arrival)
		go schedule(ph, prof, cfg.Mix, rec, arrivals, rand.Uint64())
	}
	seed := rand.Uint64()
	for i := range cfg.C {
		w := newWorker(t, rec.shardFor(i), i, seed+uint64(i))
		wg.Add(1)
		running.Add(1)
		go func() {
			defer wg.Done()
			defer running.Add(-1)
			defer w.release()
			if arrivals != nil {
				openWorker(w, ph, arrivals)
			} else {
				closedWorker(w, i, ph, cfg.Mix, prof)
			}
		}()
	}
}

// closedWorker sends the next request as soon as the previous completes.
// With stages (prof != nil), worker id works only while the profile has
// more than id workers, and waits for its turn otherwise.
func closedWorker(w *worker, id int, ph *phase, m mix, prof *profile) {
	var turn *time.Timer
	if prof != nil {
		turn = time.NewTimer(time.Hour)
		defer turn.Stop()
	}
	for !ph.stopped.Load() {
		o := m.pick(w.rng)
		start := time.Now()
		// The stop flag is set by a timer that may fire a little late;
		// checking the clock too means no request starts after the end
		// unrecorded, so the server sees exactly what the report counts.
		if !start.Before(ph.end) {
			return
		}
		if prof != nil && !prof.active(id, start.Sub(ph.start)) {
			if !awaitTurn(id, ph, prof, turn) {
				return
			}
			continue // the clock moved on: draw and time the request afresh
		}
		w.do(o, start, ph.measured(start))
	}
}

// awaitTurn sleeps until the profile activates worker id; false when the
// phase ends first. It computes the wake-up time rather than polling, so
// a thousand idle workers cost nothing.
func awaitTurn(id int, ph *phase, prof *profile, turn *time.Timer) bool {
	for {
		now := time.Now()
		if !now.Before(ph.end) || ph.stopped.Load() {
			return false
		}
		off := now.Sub(ph.start)
		if prof.active(id, off) {
			return true
		}
		at, ok := prof.reaches(off, float64(id)+0.5)
		if !ok {
			at = prof.total
		}
		// A microsecond past the computed crossing, which float rounding
		// may place a hair early.
		turn.Reset(at - off + time.Microsecond)
		select {
		case <-turn.C:
		case <-ph.stopCh:
			return false
		}
	}
}

// arrival is one scheduled request of the open model.
type arrival struct {
	op op
	at time.Time
}

// openWorker serves arrivals. Latency is measured from the scheduled
// arrival time, so a late scheduler shows up in the numbers instead of
// being hidden (coordinated omission).
func openWorker(w *worker, ph *phase, arrivals <-chan arrival) {
	for a := range arrivals {
		w.do(a.op, a.at, ph.measured(a.at))
	}
}

// schedule issues arrivals at the times the profile gives (fixed
// intervals of 1/rate for a constant rate) from the phase start. An
// arrival that finds no idle worker is counted as missed and dropped.
// When the scheduler wakes late it catches up by issuing the overdue
// arrivals immediately (each still to an idle worker or missed).
func schedule(ph *phase, prof *profile, m mix, rec *recorder, arrivals chan<- arrival, seed uint64) {
	defer close(arrivals)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := int64(0); ; i++ {
		// Computed from the start each time so rounding never drifts.
		off, ok := prof.arrivalAt(float64(i))
		at := ph.start.Add(off)
		if !ok || !at.Before(ph.end) || ph.stopped.Load() {
			return
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ph.stopCh:
				return
			}
		}
		o := m.pick(rng)
		select {
		case arrivals <- arrival{op: o, at: at}:
		default:
			if ph.measured(at) {
				rec.missed[o].Add(1)
			}
		}
	}
}

// progress prints one status line per interval (default a second) and,
// with -series, writes one row per interval of the measured window.
type progress struct {
	w      io.Writer
	rec    *recorder
	ph     *phase
	every  time.Duration
	open   bool
	stages *profile // for the progress line; nil without -stages
	target *profile // the load asked for, for the series
	series *seriesWriter
}

// loop runs until done is closed, then writes the last (partial) series
// row, so the rows add up to the report's totals.
func (p *progress) loop(done <-chan struct{}) {
	every := p.every
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lastDone uint64
	last := p.ph.start
	for {
		select {
		case <-done:
			p.series.row(p.rec, p.ph, p.target, true)
			return
		case now := <-tick.C:
			p.series.row(p.rec, p.ph, p.target, false)
			n, errs, p99 := p.rec.progress()
			label := "measure" // describes the interval that just ended
			if last.Before(p.ph.measureFrom) {
				label = "warm-up"
			}
			rps := float64(n-lastDone) / now.Sub(last).Seconds() // over the last interval
			lastDone, last = n, now
			fmt.Fprintf(p.w, "[%6.1fs] %s %9.0f req/s  errors %d  p99 %.2fms",
				now.Sub(p.ph.start).Seconds(), label, rps, errs, float64(p99)/1000)
			if p.stages != nil {
				fmt.Fprintf(p.w, "  target %s", p.stages.describe(now.Sub(p.ph.start)))
			}
			if p.open {
				var missed uint64
				for o := range p.rec.missed {
					missed += p.rec.missed[o].Load()
				}
				fmt.Fprintf(p.w, "  missed %d", missed)
			}
			fmt.Fprintln(p.w)
		}
	}
}

// prepareUsers builds the user table and, unless cfg.NoSetup, logs every
// user in to obtain a token.
func prepareUsers(ctx context.Context, t *target, cfg *Config, stderr io.Writer) error {
	t.users = make([]user, cfg.Users)
	for i := range t.users {
		name := userName(cfg.Prefix, i)
		t.users[i] = user{name: name, authBody: authBody(name, cfg.Password)}
	}
	if cfg.NoSetup {
		for i := range t.users {
			t.users[i].bearer = "Bearer loadgen-dummy-token"
		}
		return nil
	}
	return loginAll(ctx, t, cfg, stderr)
}

// loginAll authenticates all users with cfg.SetupC logins in flight. Logins
// are slow on a fresh service (bcrypt), hence the concurrency and the
// progress line. The first hard failure cancels the rest.
func loginAll(ctx context.Context, t *target, cfg *Config, stderr io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range min(cfg.SetupC, len(t.users)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := newLoginer(t, cfg.SetupTimeout)
			defer l.release()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(t.users) {
					return
				}
				tok, err := l.login(ctx, &t.users[i])
				if err != nil {
					cancel(err)
					return
				}
				t.users[i].bearer = "Bearer " + tok
				done.Add(1)
			}
		}()
	}
	finished := make(chan struct{})
	var progressWG sync.WaitGroup
	progressWG.Go(func() { setupProgress(stderr, &done, len(t.users), cfg.Progress, finished) })
	wg.Wait()
	close(finished)
	progressWG.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "setup: %d users logged in\n", done.Load())
	return nil
}

func setupProgress(w io.Writer, done *atomic.Int64, total int, every time.Duration, finished <-chan struct{}) {
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case <-finished:
			return
		case now := <-tick.C:
			n := done.Load()
			fmt.Fprintf(w, "setup: %d/%d users logged in (%.0f/s)\n", n, total, float64(n)/now.Sub(start).Seconds())
		}
	}
}

// loginer is one setup goroutine's reusable request state.
type loginer struct {
	t       *target
	timeout time.Duration
	req     *fasthttp.Request
	resp    *fasthttp.Response
	parser  fastjson.Parser
}

func newLoginer(t *target, timeout time.Duration) *loginer {
	return &loginer{t: t, timeout: timeout, req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse()}
}

func (l *loginer) release() {
	fasthttp.ReleaseRequest(l.req)
	fasthttp.ReleaseResponse(l.resp)
}

const setupAttempts = 5

// login authenticates u, retrying transient failures (429, 503, timeouts,
// connection errors) with a linear back-off.
func (l *loginer) login(ctx context.Context, u *user) (string, error) {
	var lastErr error
	for attempt := range setupAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return "", context.Cause(ctx)
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		l.req.Reset()
		l.req.Header.SetMethod(fasthttp.MethodPost)
		l.req.SetRequestURI(l.t.authURL)
		l.req.Header.SetContentType("application/json")
		l.req.SetBodyRaw(u.authBody)
		if err := l.t.client.DoTimeout(l.req, l.resp, l.timeout); err != nil {
			lastErr = fmt.Errorf("auth %s: %w", u.name, err)
			continue
		}
		body := l.resp.Body()
		switch st := l.resp.StatusCode(); st {
		case fasthttp.StatusOK:
			return l.token(u, body)
		case fasthttp.StatusTooManyRequests, fasthttp.StatusServiceUnavailable:
			lastErr = fmt.Errorf("auth %s: status %d: %s", u.name, st, snippet(body))
		case fasthttp.StatusUnauthorized:
			return "", fmt.Errorf("auth %s: 401: the user exists with another password; use another -prefix", u.name)
		default:
			return "", fmt.Errorf("auth %s: unexpected status %d: %s", u.name, st, snippet(body))
		}
	}
	return "", fmt.Errorf("%w (gave up after %d attempts)", lastErr, setupAttempts)
}

func (l *loginer) token(u *user, body []byte) (string, error) {
	v, err := l.parser.ParseBytes(body)
	if err != nil {
		return "", fmt.Errorf("auth %s: bad JSON: %w", u.name, err)
	}
	tok := v.GetStringBytes("token")
	if len(tok) == 0 {
		return "", errors.New("auth " + u.name + ": response has no token")
	}
	return string(tok), nil
}

func snippet(b []byte) string {
	const n = 120
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
