// Command merch-store serves the merch store API (see README.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := LoadConfig(os.Args[1:], getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "merch-store:", err)
		os.Exit(2)
	}
	setupLogging(cfg, os.Stderr)
	if err := run(cfg); err != nil {
		slog.Error("merch-store stopped with error", "err", err)
		os.Exit(1)
	}
}

func run(cfg Config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m := New(cfg)
	m.OnFatal = func(err error) {
		slog.Error("fatal: stopping so state is recovered from PostgreSQL on restart", "err", err)
		os.Exit(1)
	}
	if err := m.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
