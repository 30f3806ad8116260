// Command merch-store serves the merch store API (see README.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"merch/internal/logs"
)

// logKeysMax bounds the distinct log lines the rate limiter tracks.
const logKeysMax = 4096

func main() {
	if isProbe(os.Args[1:]) { // a healthcheck: no configuration, nothing started
		os.Exit(probeMain(os.Args[1:], os.Stderr))
	}
	cfg, err := LoadConfig(os.Args[1:], getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if errors.Is(err, errVersion) {
		fmt.Println(versionLine())
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "merch-store:", err)
		os.Exit(2)
	}
	lim := setupLogging(cfg, os.Stderr)
	logCtx, stopLogs := context.WithCancel(context.Background())
	logsDone := make(chan struct{})
	go func() { lim.Run(logCtx); close(logsDone) }()
	err = run(cfg)
	stopLogs()
	<-logsDone
	if err != nil {
		slog.Error("merch-store stopped with error", "err", err)
		os.Exit(1)
	}
}

// run serves until SIGINT or SIGTERM. A signal during start-up ends the
// start-up step under way with an error naming the signal (the process
// exits 1: it never served); after start-up it is a graceful stop (exit
// 0). Every other way out is an error.
func run(cfg Config) error {
	raiseFileLimit()
	ctx, stop := signalContext()
	defer stop()
	m := New(cfg)
	m.OnFatal = func(err error) {
		slog.Error("fatal: stopping so state is recovered from PostgreSQL on restart", "err", err)
		os.Exit(1)
	}
	return m.Run(ctx)
}

// signalContext is cancelled by SIGINT or SIGTERM, with the signal as its
// cause.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			cancel(fmt.Errorf("received %v", s))
		case <-ctx.Done():
		}
	}()
	return ctx, func() { signal.Stop(sigs); cancel(nil) }
}

// raiseFileLimit sets the soft RLIMIT_NOFILE to the hard limit (Go does
// this at start too; doing it here states it and logs what we got), so
// idle clients run into MAX_CONNS, not into accept failing.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		slog.Warn("cannot read the file descriptor limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			slog.Warn("cannot raise the file descriptor limit", "err", err)
			return
		}
	}
	slog.Info("file descriptor limit", "nofile", lim.Cur)
}

// setupLogging installs the process logger: text or JSON, behind the
// repeat limiter (a repeated line is written once per LOG_REPEAT_INTERVAL,
// then counted). The caller runs the limiter's Run.
func setupLogging(cfg Config, w io.Writer) *logs.Limiter {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel))); err != nil {
		level = slog.LevelInfo // validate refused anything else
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	lim := logs.NewLimiter(h, cfg.LogRepeatInterval, logKeysMax)
	slog.SetDefault(slog.New(lim))
	return lim
}
