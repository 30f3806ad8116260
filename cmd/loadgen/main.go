// Command loadgen is a load generator for the merch store HTTP API.
//
// It logs in -users accounts, then drives a weighted mix of
// /api/info, /api/buy, /api/sendCoin and /api/auth requests either with -c
// closed-loop workers or, with -rate, as an open model with constant
// arrivals, or along -stages (ramps of either), and prints latency
// percentiles and status counts per endpoint. Every buy and sendCoin
// carries a unique Idempotency-Key unless -keys=false. -max-p99 and
// -max-error-rate make the run a pass/fail check; -series writes one row
// per interval. With -serve-static it instead runs a trivial server that
// answers every request with a fixed /api/info-like body: the ceiling to
// compare against.
//
// Exit codes: 0 run completed (even with request errors, unless a
// threshold says otherwise), 1 setup, server or output failure, 2 bad
// flags, 3 a threshold was violated.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if cfg.ServeStatic != "" {
		if err := runStatic(ctx, cfg.ServeStatic, cfg.Duration, stderr); err != nil {
			fmt.Fprintln(stderr, "loadgen:", err)
			return 1
		}
		return 0
	}
	rep, err := run(ctx, cfg, stderr)
	if rep == nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 1
	}
	code := 0
	if err != nil { // the run completed; its -series file did not
		fmt.Fprintln(stderr, "loadgen:", err)
		code = 1
	}
	if cfg.JSON {
		err = json.NewEncoder(stdout).Encode(rep)
	} else {
		err = writeText(stdout, rep)
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen: writing report:", err)
	}
	if th := rep.Thresholds; th != nil {
		// Printed even with -quiet: a script's log must say why it failed.
		if !th.Passed || !cfg.Quiet {
			fmt.Fprintln(stderr, "loadgen:", th.summary())
		}
		if !th.Passed && code == 0 {
			code = 3
		}
	}
	return code
}

const usageHeader = `usage: loadgen [flags]

Logs in -users accounts, then loads the merch store with a weighted -mix of
requests and prints latency percentiles and statuses per endpoint.

Load models:
  closed (default)  -c workers, each sending its next request as soon as the
                    previous one completes
  open (-rate R)    R arrivals per second at constant intervals, served by a
                    pool of -c workers; an arrival finding none idle is counted
                    as missed (latency is measured from the scheduled arrival)
  -stages S         the load over time, replacing -d (and -rate, and -c in the
                    closed model): DURATION:TARGET,... where TARGET is a number
                    of closed-model workers (30s:400) or, with /s, open-model
                    arrivals per second (30s:400/s), one unit for every stage.
                    Each stage moves linearly from the previous stage's target
                    (0 before the first) to its own over its DURATION; a 0s
                    stage jumps. -stages 10s:100,30s:400,10s:0 ramps 0 to 100
                    workers in 10 s, to 400 over 30 s, down to 0 in 10 s; the
                    load phase lasts the sum (50 s), of which -warmup (default 0
                    with -stages) is left out of the figures.

Writes: every buy and sendCoin carries a unique Idempotency-Key (random per
run, then worker and sequence number), as a careful client's would, so write
figures include the service storing the key; -keys=false leaves them out.

Pass/fail: -max-p99 and -max-error-rate are checked on the measured total
(expected insufficient-funds 400s are not errors); a violation, or a run with no
measured request, prints "loadgen: FAIL: ..." on stderr and exits 3.

Exit codes: 0 done, 1 setup/server/output failure, 2 bad flags, 3 threshold violated.

Flags:
`

// defaultPassword is shared by all loadgen users; the accounts are
// throwaway test data on a loopback service.
const defaultPassword = "loadgen-password"

// parseFlags parses and validates the command line. Any error means exit 2.
func parseFlags(args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHeader)
		fs.PrintDefaults()
	}
	mixSpec := fs.String("mix", "info=50,buy=25,send=25,auth=0", "weighted request mix: name=weight,... over auth, info, buy, send (auth = re-login)")
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "target host:port (loopback only unless -allow-remote)")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a non-loopback -addr / -serve-static address")
	fs.IntVar(&cfg.Users, "users", 1000, "number of users to log in and use")
	fs.StringVar(&cfg.Prefix, "prefix", "lg", "user name prefix; names are prefix+index")
	fs.StringVar(&cfg.Password, "password", defaultPassword, "password of every loadgen user")
	fs.IntVar(&cfg.SetupC, "setup-c", 8, "concurrent logins during setup (new users cost a bcrypt hash each; the service sheds bursts beyond its hashing queue)")
	fs.DurationVar(&cfg.SetupTimeout, "setup-timeout", 10*time.Second, "per-request timeout during setup (bcrypt is slow)")
	fs.BoolVar(&cfg.NoSetup, "no-setup", false, "skip logins and use a dummy token (for the -serve-static target)")
	fs.IntVar(&cfg.C, "c", 64, "concurrent workers (closed model) or worker pool size (open model)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open model: arrivals per second at constant intervals (0 = closed model)")
	stages := fs.String("stages", "", "load profile DURATION:TARGET,... (workers, or arrivals/s with /s); replaces -d, see above")
	fs.DurationVar(&cfg.Duration, "d", 30*time.Second, "measured duration (with -serve-static: serve time; unset or 0 = until SIGINT/SIGTERM)")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "warm-up before measuring; its requests are not recorded (default 0 with -stages)")
	keys := fs.Bool("keys", true, "send a unique Idempotency-Key on every buy and sendCoin")
	fs.DurationVar(&cfg.Thresholds.MaxP99, "max-p99", 0, "fail (exit 3) if the measured total p99 latency is above this (0 = not checked)")
	fs.Float64Var(&cfg.Thresholds.MaxErrorRate, "max-error-rate", 0, "fail (exit 3) if errors/requests is above this FRACTION (e.g. 0.001; checked only when given)")
	fs.StringVar(&cfg.Series, "series", "", "write one row per -interval to FILE: CSV if it ends in .csv, JSON lines if .jsonl/.json/.ndjson")
	fs.DurationVar(&cfg.Progress, "interval", time.Second, "interval of the progress line on stderr and of -series rows")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "per-request timeout")
	fs.StringVar(&cfg.FundsMsg, "funds-msg", "insufficient", "case-insensitive body substring of a 400 that is an expected insufficient-funds outcome")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "no progress output on stderr")
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as one JSON object")
	fs.StringVar(&cfg.ServeStatic, "serve-static", "", "run a static ceiling server on this address instead of generating load")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if cfg.Mix, err = parseMix(*mixSpec); err != nil {
		return cfg, err
	}
	cfg.Addr = strings.TrimPrefix(cfg.Addr, "http://")
	cfg.NoKeys = !*keys
	cfg.Thresholds.ErrorRateSet = flagSet(fs, "max-error-rate")
	if cfg.ServeStatic != "" && !flagSet(fs, "d") {
		// The 30 s load default would kill the ceiling server before a
		// default load run (warm-up + 30 s) ends: serve until a signal.
		cfg.Duration = 0
	}
	if *stages != "" {
		if err := applyStages(&cfg, fs, *stages); err != nil {
			return cfg, err
		}
	}
	return cfg, validate(&cfg)
}

// applyStages sets the model, the worker pool and the durations from
// -stages, refusing the flags the stages replace.
func applyStages(cfg *Config, fs *flag.FlagSet, spec string) error {
	p, err := parseStages(spec)
	if err != nil {
		return err
	}
	for _, name := range []string{"d", "rate"} {
		if flagSet(fs, name) {
			return fmt.Errorf("-stages replaces -%s: give one or the other", name)
		}
	}
	if p.rate {
		cfg.Rate = p.peak() // selects the open model; -c is its pool
	} else {
		if flagSet(fs, "c") {
			return errors.New("-stages in workers sets the number of workers: drop -c (or give arrivals per second, 30s:400/s)")
		}
		cfg.C = int(p.peak())
	}
	if !flagSet(fs, "warmup") {
		cfg.Warmup = 0 // a ramp is its own warm-up
	}
	if cfg.Warmup >= p.total {
		return fmt.Errorf("-warmup %v leaves nothing of -stages (%v in all) to measure", cfg.Warmup, p.total)
	}
	cfg.Stages, cfg.Duration = p, p.total-cfg.Warmup
	return nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

var namePrefixRE = regexp.MustCompile(`^[A-Za-z0-9_.-]*$`)

// validate checks value ranges and the loopback restriction.
func validate(cfg *Config) error {
	if cfg.ServeStatic != "" {
		if cfg.Duration < 0 {
			return errors.New("-d must be >= 0")
		}
		return checkLoopback(cfg.ServeStatic, cfg.AllowRemote)
	}
	switch {
	case cfg.C < 1:
		return errors.New("-c must be >= 1")
	case cfg.Users < 1:
		return errors.New("-users must be >= 1")
	case cfg.Rate < 0:
		return errors.New("-rate must be >= 0")
	case cfg.Duration <= 0:
		return errors.New("-d must be > 0")
	case cfg.Warmup < 0:
		return errors.New("-warmup must be >= 0")
	case cfg.Timeout <= 0 || cfg.SetupTimeout <= 0:
		return errors.New("-timeout and -setup-timeout must be > 0")
	case cfg.Progress <= 0:
		return errors.New("-interval must be > 0")
	case cfg.Thresholds.MaxP99 < 0:
		return errors.New("-max-p99 must be >= 0")
	case cfg.Thresholds.ErrorRateSet && !(cfg.Thresholds.MaxErrorRate >= 0 && cfg.Thresholds.MaxErrorRate <= 1):
		return errors.New("-max-error-rate must be a fraction in [0, 1]")
	case cfg.SetupC < 1:
		return errors.New("-setup-c must be >= 1")
	case cfg.Mix.weights[opSend] > 0 && cfg.Users < 2:
		return errors.New("sends need -users >= 2")
	case !namePrefixRE.MatchString(cfg.Prefix):
		return errors.New("-prefix may only contain [A-Za-z0-9_.-]")
	case len(cfg.Prefix)+len(strconv.Itoa(cfg.Users-1)) > 64:
		return errors.New("-prefix too long: user names must be at most 64 characters")
	case cfg.Password == "" || len(cfg.Password) > 72:
		return errors.New("-password must be 1 to 72 bytes")
	}
	if cfg.Series != "" {
		if _, err := seriesFormat(cfg.Series); err != nil {
			return err
		}
	}
	return checkLoopback(cfg.Addr, cfg.AllowRemote)
}

// checkLoopback refuses addresses outside 127.0.0.0/8, ::1 and localhost
// unless allowRemote: the tool is meant for a service on the same machine
// and must not be pointed at someone else's by accident.
func checkLoopback(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want host:port: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("address %q: bad port", addr)
	}
	if allowRemote {
		return nil
	}
	if isLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("address %q is not loopback (127.0.0.0/8, ::1, localhost); pass -allow-remote to target it anyway", addr)
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// staticBody mimics a typical /api/info response (~260 bytes).
const staticBody = `{"coins":870,"inventory":[{"type":"pen","quantity":3},{"type":"cup","quantity":1},` +
	`{"type":"socks","quantity":2}],"coinHistory":{"received":[{"fromUser":"lg17","amount":5},` +
	`{"fromUser":"lg902","amount":2}],"sent":[{"toUser":"lg33","amount":4},{"toUser":"lg511","amount":1}]}}`

// staticHandler answers every request with 200 and staticBody.
func staticHandler(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	ctx.SetBodyString(staticBody)
}

// runStatic serves staticHandler on addr until ctx is cancelled or d
// elapses (d == 0: only ctx).
func runStatic(ctx context.Context, addr string, d time.Duration, stderr io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "serving static %d-byte JSON on %s\n", len(staticBody), ln.Addr())
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return serveStatic(ctx, ln)
}

// serveStatic serves on ln until ctx is done, then shuts down gracefully
// (bounded to 5 s so a stuck client cannot keep the process alive).
func serveStatic(ctx context.Context, ln net.Listener) error {
	srv := &fasthttp.Server{Handler: staticHandler, Name: "loadgen-static"}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.ShutdownWithContext(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
