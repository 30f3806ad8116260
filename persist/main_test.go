package persist

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
	"merch/internal/pgtest"
)

// pgc is one PostgreSQL server for the package; each test gets its own
// database.
var pgc *pgtest.Cluster

func TestMain(m *testing.M) {
	var err error
	pgc, err = pgtest.Start(pgtest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "persist tests need PostgreSQL:", err)
		os.Exit(1)
	}
	code := m.Run()
	pgc.Close()
	os.Exit(code)
}

var dbSeq atomic.Int64

// mustDB creates a fresh, migrated database and returns its URL and pool.
func mustDB(tb testing.TB) (string, *pgxpool.Pool) {
	tb.Helper()
	url, err := pgc.CreateDatabase(fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1)))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := Migrate(context.Background(), url); err != nil {
		tb.Fatal(err)
	}
	pool, err := Open(context.Background(), url, 8)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return url, pool
}

// done collects completions.
type done chan error

func (d done) JournalDone(err error) { d <- err }

func mustWait(tb testing.TB, d done) error {
	tb.Helper()
	select {
	case err := <-d:
		return err
	case <-time.After(10 * time.Second):
		tb.Fatal("journal completion did not arrive")
		return nil
	}
}

type fatalRecorder struct{ errs chan error }

func (f *fatalRecorder) fatal(err error) { f.errs <- err }

func journalConfig(pool *pgxpool.Pool, fatal func(error)) JournalConfig {
	return JournalConfig{Pool: pool, Writer: "main", QueueMax: 64, BatchMax: 16, RetryMin: 5 * time.Millisecond,
		RetryMax: 50 * time.Millisecond, AttemptTimeout: 2 * time.Second,
		Metrics: NopJournalMetrics{}, Fatal: fatal}
}

func mustJournal(tb testing.TB, cfg JournalConfig) *Journal {
	tb.Helper()
	j, err := OpenJournal(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = j.Close(context.Background()) })
	return j
}

// mustAppend appends rec and waits for its outcome.
func mustAppend(tb testing.TB, j *Journal, rec actors.Record) error {
	tb.Helper()
	d := make(done, 1)
	rec.Done = d
	if err := j.Append(&rec); err != nil {
		tb.Fatalf("append %v: %v", rec.Kind, err)
	}
	return mustWait(tb, d)
}

func register(name string) actors.Record {
	return actors.Record{Kind: actors.Registered, User: name, Amount: actors.StartingCoins,
		PasswordHash: []byte("hash-" + name)}
}

func item(tb testing.TB, name string) actors.ItemID {
	tb.Helper()
	id, ok := actors.LookupItem([]byte(name))
	if !ok {
		tb.Fatalf("no item %q", name)
	}
	return id
}
