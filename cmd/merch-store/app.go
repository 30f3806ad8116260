package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"merch/actors"
	"merch/api"
	"merch/persist"
)

// Tuning that is not configuration: each limit with its reason.
const (
	journalRetryMin    = 10 * time.Millisecond
	journalRetryMax    = time.Second
	journalAttemptMax  = 5 * time.Second // one batch attempt; a hung database fails it
	actorSweepInterval = time.Second     // janitor period (also rebuild delay after a panic)
	loadTimeout        = 2 * time.Second // loading one user
	startTimeout       = 30 * time.Second
	loginFailureNames  = 100_000 // names tracked by the brute-force limiter
)

// Main wires pool → journal → actors → api and shuts them down in reverse
// order. Start and Close are not safe for concurrent use.
type Main struct {
	cfg     Config
	OnFatal func(error) // journal cannot make progress; default logs only

	pool    *pgxpool.Pool
	journal *persist.Journal
	engine  *actor.Engine
	sys     *actors.System
	hasher  *api.Hasher
	http    *fasthttp.Server
	ln      net.Listener
	served  chan error
	pprof   *http.Server
}

// New returns an unstarted Main.
func New(cfg Config) *Main { return &Main{cfg: cfg} }

// Run starts, serves until ctx ends, then shuts down gracefully.
func (m *Main) Run(ctx context.Context) error {
	if err := m.Start(ctx); err != nil {
		return errors.Join(err, m.Close())
	}
	select {
	case <-ctx.Done():
	case err := <-m.served:
		slog.Error("http server stopped", "err", err)
	}
	return m.Close()
}

// Addr returns the listening address once started.
func (m *Main) Addr() string { return m.ln.Addr().String() }

// Start migrates the database, starts the journal, the actors and the HTTP
// server. Start-up does not depend on the number of users: users load on
// first use.
func (m *Main) Start(ctx context.Context) error {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	version, err := persist.Migrate(m.cfg.DatabaseURL)
	if err != nil {
		return err
	}
	slog.Info("migrations applied", "version", version)
	if m.pool, err = persist.Open(ctx, m.cfg.DatabaseURL, int32(m.cfg.DBMaxConns)); err != nil {
		return err
	}
	reg := api.NewRegistry()
	fatal := m.OnFatal
	if fatal == nil {
		fatal = func(err error) { slog.Error("journal fatal", "err", err) }
	}
	m.journal, err = persist.OpenJournal(ctx, persist.JournalConfig{
		Pool: m.pool, QueueMax: m.cfg.JournalQueue, BatchMax: m.cfg.JournalBatch,
		RetryMin: journalRetryMin, RetryMax: journalRetryMax, AttemptTimeout: journalAttemptMax,
		Metrics: api.NewJournalMetrics(reg), Fatal: fatal,
	})
	if err != nil {
		return err
	}
	if m.engine, err = actor.NewEngine(actor.NewEngineConfig()); err != nil {
		return fmt.Errorf("actor engine: %w", err)
	}
	m.sys, err = actors.NewSystem(actors.Config{
		Engine: m.engine, Journal: m.journal, Store: persist.NewStore(m.pool), Metrics: api.NewActorMetrics(reg),
		InboxSize: m.cfg.InboxSize, InflightPerUserMax: m.cfg.InflightPerUser,
		IdleTTL: m.cfg.IdleTTL, SweepInterval: actorSweepInterval, LoadTimeout: loadTimeout,
		WriteTimeout: m.cfg.RequestTimeout, ReadTimeout: m.cfg.RequestTimeout,
	})
	if err != nil {
		return err
	}
	if err := m.startHTTP(reg); err != nil {
		return err
	}
	if m.cfg.PprofAddr != "" {
		if err := m.startPprof(); err != nil {
			return err
		}
	}
	slog.Info("merch-store started", "addr", m.Addr(), "startup", time.Since(begin).Round(time.Millisecond))
	return nil
}

func (m *Main) startHTTP(reg *prometheus.Registry) error {
	hashSeconds := api.NewHashHistogram(reg)
	var err error
	m.hasher, err = api.NewHasher(m.cfg.BcryptCost, m.cfg.HashWorkers, m.cfg.HashQueue,
		func(d time.Duration) { hashSeconds.Observe(d.Seconds()) })
	if err != nil {
		return err
	}
	tokens, err := api.NewTokens([]byte(m.cfg.JWTSecret), m.cfg.JWTTTL, m.cfg.TokenCache)
	if err != nil {
		return err
	}
	limiter, err := api.NewLimiter(m.cfg.LoginFailures, m.cfg.LoginWindow, loginFailureNames)
	if err != nil {
		return err
	}
	api.RegisterGauges(reg, m.sys.Stats,
		func() float64 { return float64(m.journal.QueueDepth()) },
		func() float64 { return float64(m.hasher.QueueDepth()) })
	srv, err := api.New(api.Config{System: m.sys, Tokens: tokens, Hasher: m.hasher, Limiter: limiter,
		Registry: reg, Ready: m.journal.Ready})
	if err != nil {
		return err
	}
	m.http = srv.HTTPServer()
	if m.ln, err = net.Listen("tcp", m.cfg.HTTPAddr); err != nil {
		return err
	}
	m.served = make(chan error, 1)
	go func() { m.served <- m.http.Serve(m.ln) }()
	return nil
}

// Close shuts down: stop accepting and finish in-flight requests, flush the
// journal, stop the actors' janitor and the hashers, close the pool. No
// acknowledged change is lost: every 2xx was sent after its commit.
func (m *Main) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if m.http != nil {
		errs = append(errs, m.http.ShutdownWithContext(ctx))
	}
	if m.pprof != nil {
		errs = append(errs, m.pprof.Close())
	}
	if m.journal != nil {
		errs = append(errs, m.journal.Close(ctx))
	}
	if m.sys != nil {
		m.sys.Close()
	}
	if m.hasher != nil {
		m.hasher.Close()
	}
	if m.pool != nil {
		m.pool.Close()
	}
	slog.Info("merch-store stopped")
	return errors.Join(errs...)
}

// startPprof serves the Go profiler on its own listener (for make profile).
func (m *Main) startPprof() error {
	ln, err := net.Listen("tcp", m.cfg.PprofAddr)
	if err != nil {
		return fmt.Errorf("pprof listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	m.pprof = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = m.pprof.Serve(ln) }()
	slog.Info("pprof serving", "addr", ln.Addr().String())
	return nil
}

func setupLogging(cfg Config, w io.Writer) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	slog.SetDefault(slog.New(h))
}

var _ persist.JournalMetrics = (*api.JournalMetrics)(nil)
