package persist

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers pgx5://
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"merch/migrations"
)

// CheckURL reports whether url is a connection string pgx accepts; the
// error never shows its password.
func CheckURL(url string) error {
	_, err := pgxpool.ParseConfig(url)
	return redacted(err, url)
}

// connectTimeout bounds establishing one connection to one host when the
// connection string sets none: a server that accepts TCP but never answers
// must not hang start-up or a journal retry. With several hosts (a
// multi-host URL: the primary is whichever answers read-write), pgx tries
// them in order, each for this long, within one journal attempt
// (journalAttemptMax, 5 s): the hosts share connectBudget, so a frozen
// first host leaves time to reach the second.
const (
	connectTimeout = 5 * time.Second
	connectBudget  = 4 * time.Second
	connectMin     = time.Second
)

// defaultConnectTimeout is the per-host connect timeout for hosts hosts.
func defaultConnectTimeout(hosts int) time.Duration {
	if hosts <= 1 {
		return connectTimeout
	}
	return max(connectBudget/time.Duration(hosts), connectMin)
}

// hostCount is the number of distinct hosts cfg tries (its fallbacks also
// repeat a host for each TLS mode).
func hostCount(cfg *pgconn.Config) int {
	seen := map[string]bool{cfg.Host + ":" + strconv.Itoa(int(cfg.Port)): true}
	for _, f := range cfg.Fallbacks {
		seen[f.Host+":"+strconv.Itoa(int(f.Port))] = true
	}
	return len(seen)
}

// Open connects a pool to url and checks the connection. Errors never show
// the password.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("persist: parse DATABASE_URL: %w", redacted(err, url))
	}
	cfg.MaxConns = maxConns
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout(hostCount(&cfg.ConnConfig.Config))
	}
	cfg.ConnConfig.OnNotice = onNotice
	cfg.BeforeClose = forgetNotices
	cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		noCancelRequests(&cc.Config)
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("persist: connect: %w", redacted(err, url))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("persist: ping: %w", redacted(err, url))
	}
	return pool, nil
}

// errNoCancel is what a connection's cancel request gets.
var errNoCancel = errors.New("persist: cancel requests are disabled")

// noCancelRequests makes a connection refuse to dial once it is
// established. pgx dials again only to send a CancelRequest: when a
// deadline breaks a connection, pgconn's asyncClose cancels whatever the
// server is still running. That must never reach a COMMIT waiting for the
// synchronous standby: PostgreSQL would end the wait, commit locally,
// unreplicated, and a later read would see the change as if durable. With
// no cancel the backend goes on waiting, holding its locks, until the
// standby has the commit or the server stops. (A read whose client gave up
// likewise runs until it next writes to the closed socket.)
func noCancelRequests(c *pgconn.Config) {
	var up atomic.Bool
	dial := c.DialFunc
	c.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if up.Load() {
			return nil, errNoCancel
		}
		return dial(ctx, network, addr)
	}
	after := c.AfterConnect
	c.AfterConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		up.Store(true)
		if after != nil {
			return after(ctx, pc)
		}
		return nil
	}
}

// Migrate applies every pending up migration and returns the version now in
// force. It takes golang-migrate's advisory lock, so concurrent starts are
// safe. golang-migrate takes no context, so it runs on its own goroutine
// and Migrate returns when ctx ends even if the database never answers
// (that goroutine then ends at its connect timeout). Errors never show the
// password.
func Migrate(ctx context.Context, url string) (uint, error) {
	type result struct {
		v   uint
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := migrateUp(url)
		done <- result{v, redacted(err, url)}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("persist: migrate: %w", context.Cause(ctx))
	}
}

func migrateUp(url string) (uint, error) {
	m, err := newMigrate(url)
	if err != nil {
		return 0, err
	}
	defer closeMigrate(m)
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return 0, fmt.Errorf("persist: migrate up: %w", err)
	}
	v, _, err := m.Version()
	if err != nil {
		return 0, fmt.Errorf("persist: migration version: %w", err)
	}
	return v, nil
}

// MigrateDown reverts every migration (for tests of the down files).
func MigrateDown(url string) error {
	m, err := newMigrate(url)
	if err != nil {
		return err
	}
	defer closeMigrate(m)
	if err := m.Down(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("persist: migrate down: %w", err)
	}
	return nil
}

func newMigrate(url string) (*migrate.Migrate, error) {
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return nil, fmt.Errorf("persist: migrations source: %w", err)
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, migrateURL(url))
	if err != nil {
		return nil, fmt.Errorf("persist: migrate: %w", err)
	}
	return m, nil
}

func closeMigrate(m *migrate.Migrate) {
	_, _ = m.Close()
}

// migrateURL points golang-migrate's pgx/v5 driver at a postgres:// URL,
// with a connect timeout unless the URL sets one.
func migrateURL(url string) string {
	for _, p := range []string{"postgres://", "postgresql://"} {
		if strings.HasPrefix(url, p) {
			url = "pgx5://" + strings.TrimPrefix(url, p)
			break
		}
	}
	if strings.HasPrefix(url, "pgx5://") && !strings.Contains(url, "connect_timeout=") {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		timeout := connectTimeout
		if cfg, err := pgconn.ParseConfig("postgres://" + strings.TrimPrefix(url, "pgx5://")); err == nil {
			timeout = defaultConnectTimeout(hostCount(cfg))
		}
		url += sep + "connect_timeout=" + strconv.Itoa(int(timeout/time.Second))
	}
	return url
}
