package persist

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
	"merch/internal/relay"
)

// viaRelay returns url with its host:port replaced by a relay in front of
// the package's PostgreSQL.
func viaRelay(tb testing.TB, url string) (*relay.Relay, string) {
	tb.Helper()
	target := "127.0.0.1:" + strconv.Itoa(pgc.Port())
	r, err := relay.Start(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	if !strings.Contains(url, target) {
		tb.Fatalf("url %s does not name %s", url, target)
	}
	return r, strings.Replace(url, target, r.Addr(), 1)
}

// TestJournalRetryRacingFirstAttempt reproduces the race of a retry with a
// first attempt that is still on its way to the server: a relay holds the
// first attempt's bytes past AttemptTimeout, the retry reads the marker
// (not committed), then the relay delivers the first attempt, which
// commits, and only then does the retry send the batch. The retry must find
// the batch committed on the server and apply nothing: every record exactly
// once, each batch id written by one transaction, the journal never fatal.
func TestJournalRetryRacingFirstAttempt(t *testing.T) {
	url, direct := mustDB(t)
	r, relayURL := viaRelay(t, url)
	// Two connections: the timed-out one keeps its pool slot while pgx
	// closes it (up to 15 s when its peer never answers), so the retry
	// runs on a new one.
	pool, err := Open(context.Background(), relayURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	cfg := journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) })
	cfg.AttemptTimeout = 500 * time.Millisecond
	const buys, sends = 6, 4
	var once sync.Once
	var warm int // ledger rows before the held batch
	released := make(chan struct{})
	cfg.afterMarkerCheck = func(int64) {
		once.Do(func() {
			for _, c := range r.Conns() {
				c.Release()
			}
			// The first attempt reaches the server now; wait until it has
			// committed before the retry sends the batch.
			waitFor(t, func() bool { return ledgerRows(t, direct) > warm }, "the first attempt to commit")
			close(released)
		})
	}
	j := mustJournal(t, cfg)
	for _, n := range []string{"ra", "rb"} {
		if err := mustAppend(t, j, register(n)); err != nil {
			t.Fatal(err)
		}
	}
	pen := item(t, "pen")
	// Warm the connection's statement cache with a buy and a transfer, so
	// the held attempt is the batch itself, not pgx preparing it.
	for _, rec := range []actors.Record{
		{Kind: actors.Purchased, User: "ra", Item: pen, Amount: pen.Price()},
		{Kind: actors.Transferred, User: "rb", Peer: "ra", Amount: 7},
	} {
		if err := mustAppend(t, j, rec); err != nil {
			t.Fatal(err)
		}
	}
	warm = ledgerRows(t, direct)
	for _, c := range r.Conns() {
		c.Hold() // the pool's connection: the next attempt is held
	}
	var ds []done
	for i := range buys + sends {
		rec := actors.Record{Kind: actors.Purchased, User: "ra", Item: pen, Amount: pen.Price()}
		if i >= buys {
			rec = actors.Record{Kind: actors.Transferred, User: "rb", Peer: "ra", Amount: 7}
		}
		d := make(done, 1)
		rec.Done = d
		if err := j.Append(&rec); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	for i, d := range ds {
		if err := mustWait(t, d); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	select {
	case <-released:
	default:
		t.Fatal("no retry raced the first attempt: the relay did not hold it")
	}
	if n := ledgerRows(t, direct) - warm; n != buys+sends {
		t.Fatalf("ledgers hold %d rows for %d records: a batch applied twice", n, buys+sends)
	}
	var ra, rb int64
	if err := direct.QueryRow(context.Background(), `SELECT (SELECT balance FROM users WHERE name='ra'),
(SELECT balance FROM users WHERE name='rb')`).Scan(&ra, &rb); err != nil {
		t.Fatal(err)
	}
	if ra != 1000-(buys+1)*10+(sends+1)*7 || rb != 1000-(sends+1)*7 {
		t.Fatalf("balances ra=%d rb=%d", ra, rb)
	}
	assertOneTransactionPerBatch(t, direct)
	assertConserved(t, direct)
}

func ledgerRows(tb testing.TB, pool *pgxpool.Pool) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM purchases) + (SELECT count(*) FROM transfers)`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// assertOneTransactionPerBatch fails when the ledger rows of one batch id
// were written by more than one transaction (a batch applied twice).
func assertOneTransactionPerBatch(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	var dup string
	err := pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(batch::text, ','), '') FROM (
  SELECT batch FROM (SELECT batch, xmin::text x FROM purchases UNION ALL SELECT batch, xmin::text FROM transfers) l
  GROUP BY batch HAVING count(DISTINCT x) > 1) d`).Scan(&dup)
	if err != nil {
		tb.Fatal(err)
	}
	if dup != "" {
		tb.Fatalf("batches written by two transactions: %s", dup)
	}
}
