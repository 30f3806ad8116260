package persist

// Synchronous replication: what a 2xx may rest on when the database is a
// primary with a synchronous standby (pg_auto_failover; README "Database
// high availability").
//
//   - A COMMIT returns once the standby has flushed it. A commit still
//     waiting is invisible to other sessions and keeps its row locks, so
//     nothing can build on it before it is replicated.
//   - That wait can end without replication: cancelled (pg_cancel_backend,
//     statement_timeout, a keeper cancelling blocked queries) the COMMIT
//     reports success with only a WARNING, "canceling wait for synchronous
//     replication"; the change is committed locally and visible, perhaps
//     on no standby. onNotice notes such connections and the journal turns
//     that batch into an unknown outcome (ErrNotDurable, 503).
//   - A batch a retry finds committed (its answer was lost) may be such a
//     change, or one on a frozen primary that was failed over meanwhile. It
//     is acknowledged only after confirm: one write of the journal's own,
//     whose commit waits for the standby to flush WAL up to its own
//     position, and so past the batch.
//   - With synchronous_standby_names empty (pg_auto_failover's
//     wait_primary: the standby is down) every commit is acknowledged with
//     one copy. SyncWatch makes that window visible.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	// errSyncCancelled: a batch committed locally but its wait for the
	// synchronous standby was cancelled: outcome unknown.
	errSyncCancelled = errors.New("commit's wait for synchronous replication was cancelled: committed locally, maybe not replicated")
	// errConfirmCancelled: the confirming write's wait was cancelled; the
	// confirmation is retried.
	errConfirmCancelled = errors.New("confirming write's wait for synchronous replication was cancelled")
)

// syncCancelled holds the connections that reported a cancelled wait for
// synchronous replication since the journal last looked.
var syncCancelled sync.Map // *pgconn.PgConn → struct{}

// onNotice is every pool's notice handler (Open installs it). The two
// WARNINGs of PostgreSQL's syncrep.c: "canceling wait for synchronous
// replication due to user request" and "canceling the wait for synchronous
// replication and terminating connection due to administrator command".
// They are matched in English: run the server with lc_messages = C (or
// en_US), as pg_auto_failover's nodes do by default.
func onNotice(c *pgconn.PgConn, n *pgconn.Notice) {
	if strings.Contains(n.Message, "wait for synchronous replication") {
		syncCancelled.Store(c, struct{}{})
	}
}

// forgetNotices is every pool's BeforeClose: a closed connection's entry
// must not outlive it.
func forgetNotices(c *pgx.Conn) { syncCancelled.Delete(c.PgConn()) }

// cancelledSyncWait reports, once, whether c got that WARNING since the
// last call.
func cancelledSyncWait(c *pgxpool.Conn) bool {
	_, ok := syncCancelled.LoadAndDelete(c.Conn().PgConn())
	return ok
}

// confirmSQL is the replicated write: it changes nothing a reader sees, but
// it is a write (a new row version, a transaction id, a commit record), so
// its COMMIT waits for the synchronous standby like any batch.
const confirmSQL = `UPDATE journal_writers SET claimed_at = claimed_at WHERE writer = $1 AND incarnation = $2`

// confirm makes one replicated write, so that a batch found committed is
// acknowledged only once the standby holds it. An error means unconfirmed
// (retry); errSuperseded, a broken invariant.
func (j *Journal) confirm() error {
	ctx, cancel := context.WithTimeout(context.Background(), j.cfg.AttemptTimeout)
	defer cancel()
	conn, err := j.cfg.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	cancelledSyncWait(conn) // whatever it reported before is not ours
	tag, err := conn.Exec(ctx, confirmSQL, j.cfg.Writer, j.incarnation)
	switch {
	case err != nil:
		return err
	case cancelledSyncWait(conn):
		return errConfirmCancelled
	case tag.RowsAffected() != 1:
		return fmt.Errorf("%w (confirming write found no row of incarnation %d)", errSuperseded, j.incarnation)
	}
	return nil
}

// syncProbeSQL: does the primary acknowledge a commit only once a
// synchronous standby has it? synchronous_standby_names names the standbys
// it waits for (empty: none, one copy); synchronous_commit off or local
// waits for none either. Readable by any role.
const syncProbeSQL = `SELECT current_setting('synchronous_standby_names') <> ''
  AND current_setting('synchronous_commit') IN ('on', 'remote_apply', 'remote_write')`

// SyncWatch follows whether commits are acknowledged with a second copy (a
// synchronous standby) or with one. It logs every change and counts the
// records the journal acknowledged while there was one copy. Safe for
// concurrent use.
type SyncWatch struct {
	pool *pgxpool.Pool
	// state: 0 not probed yet, 1 one copy, 2 synchronous standby.
	state atomic.Int32
	since atomic.Int64 // unix nanoseconds of the last change
}

// NewSyncWatch returns a watch over pool's primary; call Probe, then Run.
func NewSyncWatch(pool *pgxpool.Pool) *SyncWatch { return &SyncWatch{pool: pool} }

// Probe asks the primary once and logs a change.
func (w *SyncWatch) Probe(ctx context.Context) error {
	var synchronous bool
	if err := w.pool.QueryRow(ctx, syncProbeSQL).Scan(&synchronous); err != nil {
		return err
	}
	next := int32(1)
	if synchronous {
		next = 2
	}
	prev := w.state.Swap(next)
	if prev == next {
		return nil
	}
	now := time.Now()
	lasted := time.Duration(now.UnixNano() - w.since.Swap(now.UnixNano())).Round(time.Millisecond)
	switch {
	case prev == 0 && synchronous:
		slog.Info("database replication: commits are acknowledged once a synchronous standby has them")
	case prev == 0:
		slog.Info("database replication: commits are acknowledged with one copy (no synchronous standby)")
	case synchronous:
		slog.Info("synchronous standby back: commits are acknowledged with two copies again", "one_copy_for", lasted)
	default:
		slog.Warn("synchronous standby lost: commits are acknowledged with ONE copy until it is back",
			"synchronous_for", lasted)
	}
	return nil
}

// Run probes every interval until stop is closed. A failed probe (no
// writable primary) leaves the state as it was: the journal is failing
// meanwhile and acknowledges nothing.
func (w *SyncWatch) Run(stop <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		if err := w.Probe(ctx); err != nil {
			slog.Warn("synchronous replication probe failed", "err", err)
		}
		cancel()
	}
}

// Synchronous reports whether, as of the last probe, commits wait for a
// synchronous standby.
func (w *SyncWatch) Synchronous() bool { return w.state.Load() == 2 }

// OneCopy reports whether, as of the last probe, commits are acknowledged
// with one copy (false before the first probe).
func (w *SyncWatch) OneCopy() bool { return w.state.Load() == 1 }
