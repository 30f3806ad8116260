package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"merch/actors"
	"merch/api"
	"merch/internal/listener"
	"merch/metrics"
	"merch/persist"
)

// Tuning that is not configuration: each limit with its reason.
const (
	journalRetryMin    = 10 * time.Millisecond
	journalRetryMax    = time.Second
	journalAttemptMax  = 5 * time.Second // one batch attempt; a hung database fails it
	actorSweepInterval = time.Second     // janitor period (also rebuild delay after a panic)
	loadTimeout        = 2 * time.Second // loading one user
	loginFailureNames  = 100_000         // names (and name, address pairs) tracked by the brute-force limiter
	registerAddrs      = 100_000         // client addresses tracked by the registration limit
	absentTTL          = time.Second     // an unknown name is not looked up again for this long
	keyPurgeInterval   = 10 * time.Minute
	// syncProbeInterval: how often the primary is asked whether it has a
	// synchronous standby (the one-copy window's resolution).
	syncProbeInterval = 500 * time.Millisecond
	readyTimeout      = time.Second // merch_ready's check, as /readyz's
	// fdReserve: file descriptors kept for everything but client
	// connections (database pool, admin listener, logs, the runtime).
	fdReserve = 128
)

// Main wires pool → journal → actors → api and shuts them down in reverse
// order. Start and Close are not safe for concurrent use.
type Main struct {
	cfg Config
	// OnFatal is required: the journal found a broken invariant of ours
	// (another process took over the database, a balance update touched
	// the wrong rows) and stopped writing for good. The process must exit
	// non-zero; state is recovered from PostgreSQL on restart.
	OnFatal func(error)

	pool    *pgxpool.Pool
	journal *persist.Journal
	engine  *actor.Engine
	sys     *actors.System
	hasher  *api.Hasher
	http    *fasthttp.Server
	ln      *listener.Listener
	admin   *http.Server
	adminLn net.Listener
	stopped chan error    // an unplanned stop of a listener
	stopBg  chan struct{} // ends the background loops (key purge, sync watch)
	sync    *persist.SyncWatch
	wg      sync.WaitGroup
	store   *persist.Store
	// A cluster node (INTERNAL_ADDR set): nil for a node alone.
	node   *clusterNode
	owners ownerRef
	api    *api.Server
}

// New returns an unstarted Main.
func New(cfg Config) *Main { return &Main{cfg: cfg, stopped: make(chan error, 2)} }

// Run starts, serves until ctx ends, then shuts down gracefully. A listener
// that stops by itself is an unplanned stop: Run shuts down and returns an
// error, so the process exits non-zero and a supervisor restarts it.
func (m *Main) Run(ctx context.Context) error {
	if err := m.Start(ctx); err != nil {
		return errors.Join(err, m.Close())
	}
	return m.Wait(ctx)
}

// Wait serves until ctx ends or a listener stops by itself, then shuts
// down; the latter is an error.
func (m *Main) Wait(ctx context.Context) error {
	var unplanned error
	select {
	case <-ctx.Done():
	case unplanned = <-m.stopped:
		slog.Error("stopping: a listener stopped by itself", "err", unplanned)
	}
	return errors.Join(unplanned, m.Close())
}

// Addr returns the public listening address once started.
func (m *Main) Addr() string { return m.ln.Addr().String() }

// AdminAddr returns the admin listening address once started.
func (m *Main) AdminAddr() string { return m.adminLn.Addr().String() }

// Start migrates the database, claims the journal, starts the actors and
// both listeners. Every step is bounded by START_TIMEOUT and by ctx (a
// signal during start-up ends it at once). Start-up does not depend on the
// number of users: users load on first use.
func (m *Main) Start(ctx context.Context) error {
	if m.OnFatal == nil {
		return errors.New("merch-store: Main.OnFatal is required")
	}
	begin := time.Now()
	ctx, cancel := context.WithTimeoutCause(ctx, m.cfg.StartTimeout,
		fmt.Errorf("start-up took longer than START_TIMEOUT (%v)", m.cfg.StartTimeout))
	defer cancel()
	version, err := persist.Migrate(ctx, m.cfg.DatabaseURL)
	if err != nil {
		return err
	}
	slog.Info("migrations applied", "version", version)
	if m.pool, err = persist.Open(ctx, m.cfg.DatabaseURL, int32(m.cfg.DBMaxConns)); err != nil {
		return startError(ctx, err)
	}
	reg := metrics.NewRegistry()
	ver, rev := buildVersion()
	metrics.RegisterBuildInfo(reg, ver, rev)
	metrics.RegisterDBPool(reg, m.poolStat)
	m.sync = persist.NewSyncWatch(m.pool)
	if err := m.sync.Probe(ctx); err != nil {
		return startError(ctx, fmt.Errorf("persist: replication probe: %w", err))
	}
	metrics.RegisterSyncStandby(reg, m.sync.Synchronous)
	clustered := m.cfg.InternalAddr != ""
	writer := singleWriterID
	var ownership persist.Ownership // nil: a node alone
	if clustered {
		writer, ownership = m.cfg.NodeID, &m.owners
	}
	m.journal, err = persist.OpenJournal(ctx, persist.JournalConfig{
		Pool: m.pool, Writer: writer, QueueMax: m.cfg.JournalQueue, BatchMax: m.cfg.JournalBatch,
		RetryMin: journalRetryMin, RetryMax: journalRetryMax, AttemptTimeout: journalAttemptMax,
		Metrics: metrics.NewJournal(reg), Fatal: m.OnFatal, Ownership: ownership, Sync: m.sync,
	})
	if err != nil {
		return startError(ctx, err)
	}
	slog.Info("journal writer claimed", "writer", writer, "incarnation", m.journal.Incarnation())
	leases := persist.NewLeases(m.pool)
	acfg := actors.Config{InboxSize: m.cfg.InboxSize, InflightPerUserMax: m.cfg.InflightPerUser,
		IdleTTL: m.cfg.IdleTTL, SweepInterval: actorSweepInterval, LoadTimeout: loadTimeout,
		WriteTimeout: m.cfg.RequestTimeout, ReadTimeout: m.cfg.RequestTimeout, AbsentTTL: absentTTL}
	m.store = persist.NewStore(m.pool)
	if clustered {
		if err := m.startLeases(ctx, leases); err != nil {
			return startError(ctx, err)
		}
		acfg.Owner, acfg.Names, acfg.CreditWait = m.node.mgr, m.store, creditWait
		acfg.Credits = &nudger{m: m.node.mgr, fold: m.foldOne, client: &fasthttp.Client{MaxConnsPerHost: nudgeConnsMax}}
	} else {
		alone, err := acquireAlone(ctx, leases, m.journal.Incarnation())
		if err != nil {
			return startError(ctx, err)
		}
		acfg.Owner = alone
	}
	if m.engine, err = actor.NewEngine(actor.NewEngineConfig()); err != nil {
		return fmt.Errorf("actor engine: %w", err)
	}
	acfg.Engine, acfg.Journal, acfg.Store, acfg.Metrics = m.engine, m.journal, m.store, metrics.NewActors(reg)
	if m.sys, err = actors.NewSystem(acfg); err != nil {
		return err
	}
	if clustered {
		m.runLeases(ctx)
	}
	if err := m.startHTTP(reg); err != nil {
		return err
	}
	if clustered {
		if err := m.startInternal(m.api); err != nil {
			return err
		}
		m.registerClusterMetrics(reg)
	}
	if err := m.startAdmin(reg); err != nil {
		return err
	}
	m.startBackground(m.store)
	slog.Info("merch-store started", "addr", m.Addr(), "admin", m.AdminAddr(),
		"startup", time.Since(begin).Round(time.Millisecond))
	return nil
}

// startError names why a start-up step gave up when its deadline or a
// signal ended it.
func startError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}

func (m *Main) startHTTP(reg *prometheus.Registry) error {
	hashSeconds := metrics.NewHashHistogram(reg)
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
	limiter, err := api.NewLimiter(api.LimiterConfig{FailuresMax: m.cfg.LoginFailures,
		NameFailuresMax: m.cfg.LoginNameFailures, Window: m.cfg.LoginWindow, NamesMax: loginFailureNames})
	if err != nil {
		return err
	}
	regs, err := api.NewRegistrations(m.cfg.RegisterRate, m.cfg.RegisterBurst, registerAddrs)
	if err != nil {
		return err
	}
	metrics.RegisterGauges(reg, metrics.GaugeSources{Actors: m.sys.Stats,
		JournalDepth: m.journal.QueueDepth, HashDepth: m.hasher.QueueDepth,
		JournalCapacity: m.journal.QueueCapacity(), HashCapacity: m.hasher.QueueCapacity()})
	metrics.RegisterTokenCache(reg, metrics.TokenCacheSources{
		Hits:   func() uint64 { h, _ := tokens.CacheStats(); return h },
		Misses: func() uint64 { _, n := tokens.CacheStats(); return n }})
	acfg := api.Config{System: m.sys, Tokens: tokens, Hasher: m.hasher, Limiter: limiter,
		Registrations: regs, Registry: reg}
	if m.node != nil {
		acfg.Router, acfg.ForwardTimeout = router{m: m.node.mgr}, m.cfg.RequestTimeout
	}
	srv, err := api.New(acfg)
	if err != nil {
		return err
	}
	m.api = srv
	m.http = srv.HTTPServer()
	ln, err := net.Listen("tcp", m.cfg.HTTPAddr)
	if err != nil {
		return err
	}
	rejected := metrics.NewRejectedConns(reg)
	onReject := func(reason string) {
		rejected(reason)
		if reason == listener.ReasonMaxConns { // answered 503
			api.CountShedConn()
		}
	}
	m.ln = listener.New(ln, listener.Config{
		MaxConns: connCap(m.cfg), MaxConnsPerIP: m.cfg.MaxConnsPerIP, OnReject: onReject,
		OnAcceptError: func(err error, backoff time.Duration) {
			slog.Error("accept failed; retrying", "err", err, "backoff", backoff)
		},
	})
	go m.serve("http", func() error { return m.http.Serve(m.ln) })
	return nil
}

// connCap is MAX_CONNS, lowered to what the file descriptor limit leaves
// (the soft limit was raised to the hard one at start): connections past
// the cap get a 503 instead of making accept fail.
func connCap(cfg Config) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return cfg.MaxConns
	}
	fit := int(min(lim.Cur, 1<<30)) - fdReserve - cfg.DBMaxConns
	if fit < cfg.MaxConns {
		fit = max(fit, 1)
		slog.Warn("MAX_CONNS lowered to fit the file descriptor limit", "max_conns", cfg.MaxConns,
			"lowered_to", fit, "nofile", lim.Cur)
		return fit
	}
	return cfg.MaxConns
}

// serve runs a listener's loop; if it returns while Main is not closing,
// that is an unplanned stop.
func (m *Main) serve(name string, loop func() error) {
	err := loop()
	if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = fmt.Errorf("%s listener stopped", name)
	}
	m.stopped <- fmt.Errorf("%s: %w", name, err)
}

func (m *Main) startAdmin(reg *prometheus.Registry) error {
	ln, err := net.Listen("tcp", m.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	m.adminLn = ln
	metrics.RegisterReady(reg, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		return m.ready(ctx) == nil
	})
	m.admin = &http.Server{Handler: api.AdminHandler(reg, m.ready, m.debugHandlers()),
		ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	go m.serve("admin", func() error { return m.admin.Serve(ln) })
	return nil
}

// ready is /readyz: the journal can write and, with REQUIRE_SYNC_STANDBY,
// the primary has a synchronous standby (a commit acknowledged now is on
// two machines).
func (m *Main) ready(ctx context.Context) error {
	if err := m.journal.Ready(ctx); err != nil {
		return err
	}
	if m.cfg.RequireSyncStandby && !m.sync.Synchronous() {
		return api.ErrNoSyncStandby
	}
	return nil
}

// startBackground runs, until Close, the replication probe (every
// syncProbeInterval) and the purge of expired idempotency keys (now and
// every keyPurgeInterval).
func (m *Main) startBackground(store *persist.Store) {
	m.stopBg = make(chan struct{})
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		m.sync.Run(m.stopBg, syncProbeInterval)
	}()
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(keyPurgeInterval)
		defer t.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), keyPurgeInterval/2)
			n, err := store.PurgeExpiredKeys(ctx)
			cancel()
			switch {
			case err != nil:
				slog.Warn("idempotency key purge failed", "err", err)
			case n > 0:
				slog.Info("expired idempotency keys purged", "keys", n)
			}
			select {
			case <-m.stopBg:
				return
			case <-t.C:
			}
		}
	}()
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
	} else if m.ln != nil {
		_ = m.ln.Close()
	}
	if m.node != nil {
		errs = append(errs, m.stopCluster(ctx)) // hand the shards off before the journal closes
	}
	if m.admin != nil {
		errs = append(errs, m.admin.Close())
	}
	if m.stopBg != nil {
		close(m.stopBg)
		m.wg.Wait()
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

var _ persist.JournalMetrics = (*metrics.Journal)(nil)

// poolStat copies the pool's statistics for merch_db_pool_*.
func (m *Main) poolStat() metrics.PoolStat {
	st := m.pool.Stat()
	return metrics.PoolStat{Acquired: st.AcquiredConns(), Idle: st.IdleConns(), Total: st.TotalConns(),
		Max: st.MaxConns(), Acquires: st.AcquireCount(), EmptyAcquires: st.EmptyAcquireCount(),
		EmptyAcquireWait: st.EmptyAcquireWaitTime()}
}
