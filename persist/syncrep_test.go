package persist

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
	"merch/internal/logtest"
	"merch/internal/pgtest"
)

// The tests here run on a PostgreSQL of their own whose
// synchronous_standby_names they change (a server-wide setting): naming a
// standby that never connects makes every commit wait for it, as a primary
// does whose synchronous standby has not received the commit yet.

// syncServer starts that PostgreSQL and returns a migrated database's
// pool (the journal's) and a second pool for the test's own queries.
func syncServer(t *testing.T) (journalPool, admin *pgxpool.Pool) {
	t.Helper()
	var log logtest.Buffer
	c, err := pgtest.Start(pgtest.Options{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PostgreSQL log:\n%s", log.String())
		}
	})
	url, err := c.CreateDatabase("syncrep")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Migrate(context.Background(), url); err != nil {
		t.Fatal(err)
	}
	for _, p := range []**pgxpool.Pool{&journalPool, &admin} {
		if *p, err = Open(context.Background(), url, 4); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*p).Close)
	}
	return journalPool, admin
}

// setStandby sets synchronous_standby_names and waits until new sessions
// see it.
func setStandby(t *testing.T, admin *pgxpool.Pool, names string) {
	t.Helper()
	ctx := context.Background()
	if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER SYSTEM SET synchronous_standby_names = '%s'`, names)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		var got string
		err := admin.QueryRow(ctx, `SELECT current_setting('synchronous_standby_names')`).Scan(&got)
		return err == nil && got == names
	}, "synchronous_standby_names = '"+names+"'")
}

// resetStandby clears synchronous_standby_names, releasing every waiting
// commit, for a test's cleanup.
func resetStandby(admin *pgxpool.Pool) {
	ctx := context.Background()
	_, _ = admin.Exec(ctx, `ALTER SYSTEM RESET synchronous_standby_names`)
	_, _ = admin.Exec(ctx, `SELECT pg_reload_conf()`)
}

// syncWaiter returns the pid of a backend waiting for synchronous
// replication, once there is one.
func syncWaiter(t *testing.T, admin *pgxpool.Pool) int {
	t.Helper()
	var pid int
	waitFor(t, func() bool {
		err := admin.QueryRow(context.Background(),
			`SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' ORDER BY pid LIMIT 1`).Scan(&pid)
		return err == nil
	}, "a commit waiting for synchronous replication")
	return pid
}

func cancelBackend(t *testing.T, admin *pgxpool.Pool, pid int) {
	t.Helper()
	var ok bool
	if err := admin.QueryRow(context.Background(), `SELECT pg_cancel_backend($1)`, pid).Scan(&ok); err != nil || !ok {
		rows, _ := admin.Query(context.Background(), `SELECT pid, state, coalesce(wait_event,''), left(query, 60) FROM pg_stat_activity WHERE datname = current_database()`)
		for rows.Next() {
			var p int
			var st, we, q string
			_ = rows.Scan(&p, &st, &we, &q)
			t.Logf("backend %d %s %s %s", p, st, we, q)
		}
		rows.Close()
		t.Fatalf("pg_cancel_backend(%d): %v %v", pid, ok, err)
	}
}

// countingMetrics counts failed attempts.
type countingMetrics struct {
	NopJournalMetrics
	failed atomic.Int64
}

func (m *countingMetrics) Failed() { m.failed.Add(1) }

func purchases(t *testing.T, admin *pgxpool.Pool, user string) int {
	t.Helper()
	var n int
	if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM purchases WHERE user_name = $1`, user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestJournalFoundCommittedWaitsForReplication: a batch whose first
// attempt timed out while its commit waited for the standby, and whose
// wait was then cancelled (it committed locally, unreplicated), is found
// committed by a retry. That must not be acknowledged until a write of the
// journal's own has been replicated: while the standby is missing the
// record stays unanswered; once replication works, it completes.
func TestJournalFoundCommittedWaitsForReplication(t *testing.T) {
	jp, admin := syncServer(t)
	m := &countingMetrics{}
	cfg := journalConfig(jp, func(err error) { t.Errorf("fatal: %v", err) })
	cfg.AttemptTimeout, cfg.Metrics = 300*time.Millisecond, m
	j := mustJournal(t, cfg)
	t.Cleanup(func() { resetStandby(admin) }) // before Close: let it drain
	if err := mustAppend(t, j, register("sa")); err != nil {
		t.Fatal(err)
	}
	setStandby(t, admin, "ghost")
	pen := item(t, "pen")
	d := make(done, 1)
	rec := actors.Record{Kind: actors.Purchased, User: "sa", Item: pen, Amount: pen.Price(), Done: d}
	if err := j.Append(&rec); err != nil {
		t.Fatal(err)
	}
	pid := syncWaiter(t, admin)
	// The attempt times out (its answer is lost) while the backend still
	// waits for the standby; only then is the wait cancelled.
	waitFor(t, func() bool { return m.failed.Load() >= 1 }, "the first attempt to time out")
	cancelBackend(t, admin, pid)
	waitFor(t, func() bool { return purchases(t, admin, "sa") == 1 }, "the cancelled commit to become visible")
	// The journal now finds the batch committed on its next retry. Give it
	// three more failed attempts: an acknowledgement among them is the bug.
	failed := m.failed.Load()
	var got error
	acked := false
	waitFor(t, func() bool {
		select {
		case got = <-d:
			acked = true
			return true
		default:
			return m.failed.Load() >= failed+3
		}
	}, "an outcome or three more attempts")
	if acked {
		t.Fatalf("record answered %v while no standby had its batch", got)
	}
	setStandby(t, admin, "")
	if err := mustWait(t, d); err != nil {
		t.Fatalf("after replication works again: %v", err)
	}
	if n := purchases(t, admin, "sa"); n != 1 {
		t.Fatalf("%d purchases, want 1", n)
	}
}

// TestJournalCancelledSyncWaitIsUnknown: a COMMIT whose wait for the
// standby is cancelled reports success with only a WARNING ("canceling
// wait for synchronous replication"): the change is committed locally but
// perhaps on no standby. Its records must be answered ErrNotDurable
// (unknown), never as committed; the journal goes on with the next batch.
func TestJournalCancelledSyncWaitIsUnknown(t *testing.T) {
	jp, admin := syncServer(t)
	cfg := journalConfig(jp, func(err error) { t.Errorf("fatal: %v", err) })
	cfg.AttemptTimeout = time.Minute // the attempt is still waiting when the wait is cancelled
	j := mustJournal(t, cfg)
	t.Cleanup(func() { resetStandby(admin) })
	if err := mustAppend(t, j, register("sb")); err != nil {
		t.Fatal(err)
	}
	setStandby(t, admin, "ghost")
	pen := item(t, "pen")
	d := make(done, 1)
	rec := actors.Record{Kind: actors.Purchased, User: "sb", Item: pen, Amount: pen.Price(), Done: d}
	if err := j.Append(&rec); err != nil {
		t.Fatal(err)
	}
	cancelBackend(t, admin, syncWaiter(t, admin))
	if err := mustWait(t, d); !errors.Is(err, actors.ErrNotDurable) {
		t.Fatalf("cancelled sync wait answered %v, want ErrNotDurable", err)
	}
	setStandby(t, admin, "")
	if err := mustAppend(t, j, actors.Record{Kind: actors.Purchased, User: "sb", Item: pen, Amount: pen.Price()}); err != nil {
		t.Fatalf("next batch: %v", err)
	}
	if n := purchases(t, admin, "sb"); n != 2 {
		t.Fatalf("%d purchases, want 2 (the unknown one committed locally)", n)
	}
}

// TestJournalTimeoutNeverCancelsCommit: when an attempt's deadline breaks
// its connection while the COMMIT waits for the standby, pgx would send a
// CancelRequest, and PostgreSQL would end the wait by committing locally,
// unreplicated. The journal's pool sends none: two attempts later the first
// backend still waits and nothing of the batch is visible.
func TestJournalTimeoutNeverCancelsCommit(t *testing.T) {
	jp, admin := syncServer(t)
	m := &countingMetrics{}
	cfg := journalConfig(jp, func(err error) { t.Errorf("fatal: %v", err) })
	cfg.AttemptTimeout, cfg.Metrics = 200*time.Millisecond, m
	j := mustJournal(t, cfg)
	t.Cleanup(func() { resetStandby(admin) })
	if err := mustAppend(t, j, register("sc")); err != nil {
		t.Fatal(err)
	}
	setStandby(t, admin, "ghost")
	pen := item(t, "pen")
	if err := j.Append(&actors.Record{Kind: actors.Purchased, User: "sc", Item: pen, Amount: pen.Price(), Done: make(done, 1)}); err != nil {
		t.Fatal(err)
	}
	pid := syncWaiter(t, admin)
	waitFor(t, func() bool { return m.failed.Load() >= 2 }, "two attempts to time out")
	var waiting bool
	if err := admin.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep')`, pid).Scan(&waiting); err != nil {
		t.Fatal(err)
	}
	if n := purchases(t, admin, "sc"); !waiting || n != 0 {
		t.Fatalf("after the attempt timed out: backend still waiting for the standby %v, purchases visible %d (want true, 0): the COMMIT was cancelled", waiting, n)
	}
}

// TestSyncWatchFollowsTheStandby: the watch reports one copy while
// synchronous_standby_names is empty and a synchronous standby while it
// names one, logs each change, and the journal counts the records it
// acknowledged with one copy.
func TestSyncWatchFollowsTheStandby(t *testing.T) {
	jp, admin := syncServer(t)
	logs := logtest.Capture(t)
	w := NewSyncWatch(jp)
	probe := func() {
		t.Helper()
		if err := w.Probe(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if w.OneCopy() || w.Synchronous() {
		t.Fatal("state known before the first probe")
	}
	probe()
	if !w.OneCopy() || w.Synchronous() {
		t.Fatalf("no standby named: OneCopy %v Synchronous %v", w.OneCopy(), w.Synchronous())
	}
	m := &oneCopyMetrics{}
	cfg := journalConfig(jp, func(err error) { t.Errorf("fatal: %v", err) })
	cfg.Metrics, cfg.Sync = m, w
	j := mustJournal(t, cfg)
	if err := mustAppend(t, j, register("sd")); err != nil {
		t.Fatal(err)
	}
	if n := m.records.Load(); n != 1 {
		t.Fatalf("one-copy records %d, want 1", n)
	}
	setStandby(t, admin, "ghost")
	probe()
	if !w.Synchronous() || w.OneCopy() {
		t.Fatalf("standby named: OneCopy %v Synchronous %v", w.OneCopy(), w.Synchronous())
	}
	setStandby(t, admin, "")
	probe()
	if !w.OneCopy() {
		t.Fatal("standby gone: not one copy")
	}
	for _, want := range []string{"commits are acknowledged with one copy (no synchronous standby)",
		"synchronous standby back", "synchronous standby lost: commits are acknowledged with ONE copy"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

type oneCopyMetrics struct {
	NopJournalMetrics
	records atomic.Int64
}

func (m *oneCopyMetrics) OneCopy(n int) { m.records.Add(int64(n)) }
