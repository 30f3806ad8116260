// Command loadgen is a load generator for the merch store HTTP API.
//
// It logs in -users accounts, then drives a weighted mix of
// /api/info, /api/buy, /api/sendCoin and /api/auth requests either with -c
// closed-loop workers or, with -rate, as an open model with constant
// arrivals, and prints latency percentiles and status counts per endpoint.
// With -serve-static it instead runs a trivial server that answers every
// request with a fixed /api/info-like body: the ceiling to compare against.
//
// Exit codes: 0 run completed (even with request errors), 1 setup or
// server failure, 2 bad flags.
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
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 1
	}
	if cfg.JSON {
		err = json.NewEncoder(stdout).Encode(rep)
	} else {
		err = writeText(stdout, rep)
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen: writing report:", err)
	}
	return 0
}

// defaultPassword is shared by all loadgen users; the accounts are
// throwaway test data on a loopback service.
const defaultPassword = "loadgen-password"

// parseFlags parses and validates the command line. Any error means exit 2.
func parseFlags(args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
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
	fs.DurationVar(&cfg.Duration, "d", 30*time.Second, "measured duration (with -serve-static: serve time; unset or 0 = until SIGINT/SIGTERM)")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "warm-up before measuring; its requests are not recorded")
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
	if cfg.ServeStatic != "" && !flagSet(fs, "d") {
		// The 30 s load default would kill the ceiling server before a
		// default load run (warm-up + 30 s) ends: serve until a signal.
		cfg.Duration = 0
	}
	return cfg, validate(&cfg)
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
