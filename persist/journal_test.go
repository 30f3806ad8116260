package persist

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
	"merch/internal/logtest"
	"merch/migrations"
)

func TestJournalWritesAndStoreLoads(t *testing.T) {
	_, pool := mustDB(t)
	j := mustJournal(t, journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) }))
	store := NewStore(pool)
	ctx := context.Background()

	for _, n := range []string{"alice", "bob", "carol"} {
		if err := mustAppend(t, j, register(n)); err != nil {
			t.Fatalf("register %s: %v", n, err)
		}
	}
	cup, pen := item(t, "cup"), item(t, "pen")
	recs := []actors.Record{
		{Kind: actors.Purchased, User: "alice", Item: cup, Amount: cup.Price(), Key: "k1"},
		{Kind: actors.Purchased, User: "alice", Item: cup, Amount: cup.Price()},
		{Kind: actors.Purchased, User: "bob", Item: pen, Amount: pen.Price()},
		{Kind: actors.Transferred, User: "alice", Peer: "bob", Amount: 30, Key: "k2"},
		{Kind: actors.Transferred, User: "alice", Peer: "bob", Amount: 5},
		{Kind: actors.Transferred, User: "bob", Peer: "alice", Amount: 7},
		{Kind: actors.Transferred, User: "carol", Peer: "alice", Amount: 100},
	}
	// Append all at once so they share batches, then wait for each.
	var ds []done
	for i := range recs {
		d := make(done, 1)
		recs[i].Done = d
		if err := j.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	for i, d := range ds {
		if err := mustWait(t, d); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}

	alice, err := store.LoadUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if want := actors.Coins(1000 - 40 - 35 + 7 + 100); alice.Coins != want {
		t.Errorf("alice coins = %d, want %d", alice.Coins, want)
	}
	if alice.Inventory[cup] != 2 {
		t.Errorf("alice cups = %d, want 2", alice.Inventory[cup])
	}
	wantRecv := []actors.Counterparty{{User: "bob", Amount: 7}, {User: "carol", Amount: 100}}
	if !equalTotals(alice.Received, wantRecv) {
		t.Errorf("alice received = %v, want %v", alice.Received, wantRecv)
	}
	if want := []actors.Counterparty{{User: "bob", Amount: 35}}; !equalTotals(alice.Sent, want) {
		t.Errorf("alice sent = %v, want %v", alice.Sent, want)
	}
	if string(alice.PasswordHash) != "hash-alice" {
		t.Errorf("hash = %q", alice.PasswordHash)
	}
	wantKeys := map[string]actors.KeyedRequest{
		"k1": {Key: "k1", Kind: actors.Purchased, Item: cup, Amount: cup.Price()},
		"k2": {Key: "k2", Kind: actors.Transferred, Peer: "bob", Amount: 30},
	}
	if len(alice.Keys) != len(wantKeys) {
		t.Fatalf("keys = %v", alice.Keys)
	}
	for _, k := range alice.Keys {
		if wantKeys[k.Key] != k {
			t.Errorf("key %q = %+v, want %+v", k.Key, k, wantKeys[k.Key])
		}
	}
	bob, err := store.LoadUser(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if want := actors.Coins(1000 - 10 + 35 - 7); bob.Coins != want {
		t.Errorf("bob coins = %d, want %d", bob.Coins, want)
	}
	if _, err := store.LoadUser(ctx, "nobody"); !errors.Is(err, actors.ErrUnknownUser) {
		t.Errorf("unknown user: err = %v", err)
	}
	assertConserved(t, pool)
}

func equalTotals(a, b []actors.Counterparty) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// assertConserved runs the money audit and fails on any violation.
func assertConserved(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	r, err := Audit(context.Background(), pool)
	if err != nil {
		tb.Fatal(err)
	}
	if !r.OK() {
		tb.Fatalf("audit: %s", r)
	}
}

func TestJournalRegisterConflict(t *testing.T) {
	_, pool := mustDB(t)
	j := mustJournal(t, journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) }))
	if err := mustAppend(t, j, register("dora")); err != nil {
		t.Fatal(err)
	}
	err := mustAppend(t, j, register("dora"))
	if !errors.Is(err, actors.ErrUserExists) {
		t.Fatalf("second register: err = %v, want ErrUserExists", err)
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("users = %d, %v", n, err)
	}
}

func TestJournalRefusedRecordFailsAlone(t *testing.T) {
	_, pool := mustDB(t)
	j := mustJournal(t, journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) }))
	if err := mustAppend(t, j, register("erin")); err != nil {
		t.Fatal(err)
	}
	// Bypassing the actors: three hoodies of 500 for a balance of 1000.
	// CHECK (balance >= 0) refuses any batch holding all three; bisection
	// commits the first two (in order) and fails only the third, however
	// the records were grouped into batches.
	hoody := item(t, "pink-hoody")
	recs := make([]actors.Record, 3)
	ds := make([]done, 3)
	for i := range recs {
		ds[i] = make(done, 1)
		recs[i] = actors.Record{Kind: actors.Purchased, User: "erin", Item: hoody, Amount: hoody.Price(), Done: ds[i]}
	}
	for i := range recs {
		if err := j.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range ds {
		err := mustWait(t, d)
		if want := error(nil); i == 2 {
			if !errors.Is(err, actors.ErrInternal) {
				t.Errorf("record %d: err = %v, want ErrInternal", i, err)
			}
		} else if err != want {
			t.Errorf("record %d: err = %v, want committed", i, err)
		}
	}
	var balance, bought int64
	if err := pool.QueryRow(context.Background(), `SELECT balance, (SELECT count(*) FROM purchases) FROM users WHERE name='erin'`).
		Scan(&balance, &bought); err != nil {
		t.Fatal(err)
	}
	if balance != 0 || bought != 2 {
		t.Fatalf("balance = %d, purchases = %d; want 0 and 2", balance, bought)
	}
	// The journal keeps serving.
	if err := mustAppend(t, j, register("erin2")); err != nil {
		t.Fatalf("after a refused record: %v", err)
	}
	if !j.Healthy() {
		t.Fatal("journal unhealthy after a refused record")
	}
	assertConserved(t, pool)
}

func TestJournalLiveKeyConflictFailsOnlyItsRecord(t *testing.T) {
	_, pool := mustDB(t)
	j := mustJournal(t, journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) }))
	for _, n := range []string{"kim", "lee"} {
		if err := mustAppend(t, j, register(n)); err != nil {
			t.Fatal(err)
		}
	}
	// A live key row the actors did not know about (they normally refuse
	// the reuse first): its primary key refuses that record only.
	if _, err := pool.Exec(context.Background(), `INSERT INTO idempotency_keys (user_name, key, kind, amount, shard)
VALUES ('kim', 'dup', 'transferred', 1, merch_shard('kim'))`); err != nil {
		t.Fatal(err)
	}
	pen := item(t, "pen")
	recs := []actors.Record{
		{Kind: actors.Purchased, User: "lee", Item: pen, Amount: pen.Price(), Key: "a"},
		{Kind: actors.Purchased, User: "kim", Item: pen, Amount: pen.Price(), Key: "dup"},
		{Kind: actors.Transferred, User: "lee", Peer: "kim", Amount: 5, Key: "b"},
		{Kind: actors.Purchased, User: "kim", Item: pen, Amount: pen.Price()},
	}
	ds := make([]done, len(recs))
	for i := range recs {
		ds[i] = make(done, 1)
		recs[i].Done = ds[i]
		if err := j.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range ds {
		err := mustWait(t, d)
		if i == 1 {
			if !errors.Is(err, actors.ErrInternal) {
				t.Errorf("conflicting record: err = %v, want ErrInternal", err)
			}
		} else if err != nil {
			t.Errorf("record %d: %v", i, err)
		}
	}
	var kim, lee int64
	if err := pool.QueryRow(context.Background(), `SELECT (SELECT balance FROM users WHERE name='kim'),
(SELECT balance FROM users WHERE name='lee')`).Scan(&kim, &lee); err != nil {
		t.Fatal(err)
	}
	if kim != 1000-10+5 || lee != 1000-10-5 {
		t.Fatalf("kim = %d, lee = %d", kim, lee)
	}
	assertConserved(t, pool)
}

func TestJournalSupersededWriterIsFatal(t *testing.T) {
	_, pool := mustDB(t)
	fr := &fatalRecorder{errs: make(chan error, 4)}
	j1 := mustJournal(t, journalConfig(pool, fr.fatal))
	if err := mustAppend(t, j1, register("fay")); err != nil {
		t.Fatal(err)
	}
	// A second process claims the writer: the first one's next batch is
	// refused on the server and it halts for good.
	j2 := mustJournal(t, journalConfig(pool, func(err error) { t.Errorf("second writer fatal: %v", err) }))
	if j2.Incarnation() != j1.Incarnation()+1 {
		t.Fatalf("incarnations %d then %d", j1.Incarnation(), j2.Incarnation())
	}
	d := make(done, 1)
	rec := register("gus")
	rec.Done = d
	if err := j1.Append(&rec); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-fr.errs:
		if !errors.Is(err, errSuperseded) {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != codeSuperseded {
				t.Fatalf("fatal err = %v, want superseded", err)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("superseded writer not detected")
	}
	if err := mustWait(t, d); !errors.Is(err, actors.ErrJournalUnavailable) {
		t.Fatalf("record of the halted writer: %v, want ErrJournalUnavailable", err)
	}
	if err := j1.Append(&rec); !errors.Is(err, actors.ErrJournalUnavailable) {
		t.Fatalf("append after halt: %v, want ErrJournalUnavailable", err)
	}
	if err := j1.Ready(context.Background()); err == nil {
		t.Fatal("halted journal reports ready")
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM users WHERE name = 'gus'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("halted writer's record written: %d, %v", n, err)
	}
	if err := mustAppend(t, j2, register("gus")); err != nil {
		t.Fatalf("new writer: %v", err)
	}
}

func TestJournalQueueFullAndOutageRecovery(t *testing.T) {
	// Its own cluster: this test stops the server.
	_, pool := mustDB(t)
	cfg := journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) })
	cfg.QueueMax, cfg.BatchMax = 2, 1
	j := mustJournal(t, cfg)
	if err := mustAppend(t, j, register("hal")); err != nil {
		t.Fatal(err)
	}
	if err := pgc.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			_ = pgc.Start()
		}
	}()
	pen := item(t, "pen")
	var ds []done
	appendPen := func() error {
		d := make(done, 1)
		rec := actors.Record{Kind: actors.Purchased, User: "hal", Item: pen, Amount: pen.Price(), Done: d}
		err := j.Append(&rec)
		if err == nil {
			ds = append(ds, d)
		}
		return err
	}
	// The writer takes at most one record into its failing batch; the queue
	// holds two more; the rest are refused at once: queue full, or, once
	// the writer's first attempt has failed (it may, before the loop ends),
	// journal unavailable.
	var overloaded int
	for range 6 {
		if err := appendPen(); errors.Is(err, actors.ErrJournalFull) || errors.Is(err, actors.ErrJournalUnavailable) {
			overloaded++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if overloaded < 3 || len(ds) > 3 {
		t.Fatalf("accepted %d, overloaded %d: want ≤ 3 accepted", len(ds), overloaded)
	}
	waitFor(t, func() bool { return !j.Healthy() }, "journal to notice the outage")
	if err := j.Ready(context.Background()); err == nil {
		t.Fatal("Ready during outage = nil")
	}
	if err := appendPen(); !errors.Is(err, actors.ErrJournalUnavailable) {
		t.Fatalf("append during outage: %v, want ErrJournalUnavailable at once", err)
	}
	if err := pgc.Start(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	for i, d := range ds {
		if err := mustWait(t, d); err != nil {
			t.Fatalf("record %d after recovery: %v", i, err)
		}
	}
	if !j.Healthy() {
		t.Fatal("journal not healthy after recovery")
	}
	var balance int64
	if err := pool.QueryRow(context.Background(), `SELECT balance FROM users WHERE name='hal'`).Scan(&balance); err != nil {
		t.Fatal(err)
	}
	if want := int64(1000 - 10*len(ds)); balance != want {
		t.Fatalf("balance = %d, want %d (each accepted record exactly once)", balance, want)
	}
}

// waitFor polls cond until it holds; the deadline only bounds a failure.
func waitFor(tb testing.TB, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestJournalCloseFlushesAndRefuses(t *testing.T) {
	_, pool := mustDB(t)
	j, err := OpenJournal(context.Background(), journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) }))
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	ds := make([]done, n)
	var wg sync.WaitGroup
	for i := range n {
		ds[i] = make(done, 1)
		rec := register("u" + string(rune('a'+i%26)) + string(rune('a'+i/26)))
		rec.Done = ds[i]
		if err := j.Append(&rec); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		select {
		case err := <-d:
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		default:
			t.Fatalf("record %d not completed by Close", i)
		}
	}
	rec := register("late")
	if err := j.Append(&rec); !errors.Is(err, actors.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	var count int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&count); err != nil || count != n {
		t.Fatalf("users = %d, %v; want %d", count, err, n)
	}
}

func TestMigrationsDownAndUp(t *testing.T) {
	url, pool := mustDB(t)
	if err := MigrateDown(url); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := pool.QueryRow(context.Background(), `SELECT to_regclass('users') IS NOT NULL`).Scan(&exists); err != nil || exists {
		t.Fatalf("users table after down: %v, %v", exists, err)
	}
	ups, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil || len(ups) == 0 {
		t.Fatalf("no up migrations: %v", err)
	}
	latest := uint(len(ups)) // numbered 0001… without gaps
	v, err := Migrate(context.Background(), url)
	if err != nil || v != latest {
		t.Fatalf("migrate up again: v=%d err=%v, want %d", v, err, latest)
	}
	if v, err = Migrate(context.Background(), url); err != nil || v != latest {
		t.Fatalf("migrate up twice: v=%d err=%v, want %d", v, err, latest)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ dsn, msg string }{
		{"postgres://u:s3cret@h:bad/db", `parse "pgx5://u:s3cret@h:bad/db": invalid port`},
		{"postgres://u:s%40cret@h/db", `user s@cret and s%40cret`},
		{"host=h password=s3cret port=x", `cannot parse host=h password=s3cret`},
		{"host=h password='s3 cret' port=x", `quoted s3 cret`},
		{"postgres://u@h/db?password=s3cret&sslmode=bogus", `password=s3cret`},
	}
	for _, tt := range tests {
		got := Redact(tt.msg, tt.dsn)
		if strings.Contains(got, "s3cret") || strings.Contains(got, "s@cret") || strings.Contains(got, "s%40cret") ||
			strings.Contains(got, "s3 cret") || !strings.Contains(got, "xxxxx") {
			t.Errorf("Redact(%q) = %q", tt.msg, got)
		}
	}
	// Through the real libraries: a malformed URL and a refused connection.
	for _, dsn := range []string{"postgres://u:s3cret@h:bad/db", "postgres://u:s3cret@127.0.0.1:1/db"} {
		if _, err := Migrate(context.Background(), dsn); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Migrate(%s): %v", dsn, err)
		}
		if err := CheckURL(dsn); err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("CheckURL(%s): %v", dsn, err)
		}
		if _, err := Open(context.Background(), dsn, 1); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%s): %v", dsn, err)
		}
	}
}

// TestShardSQLMatchesGo: merch_shard (the migration's backfill) computes
// actors.ShardOf for every kind of name, byte for byte.
func TestShardSQLMatchesGo(t *testing.T) {
	_, pool := mustDB(t)
	names := []string{"", "a", "alice", "123456789", "user.name_with-dots", "Ünïcode-ß", "lg999"}
	for i := range 300 {
		names = append(names, fmt.Sprintf("u%d-%x", i, i*7919))
	}
	rows, err := pool.Query(context.Background(), `SELECT n, merch_shard(n) FROM unnest($1::text[]) n`, names)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var n string
		var s int16
		if err := rows.Scan(&n, &s); err != nil {
			t.Fatal(err)
		}
		if want := actors.ShardOf(n); s != int16(want) {
			t.Errorf("merch_shard(%q) = %d, ShardOf = %d", n, s, want)
		}
		seen++
	}
	if seen != len(names) {
		t.Fatalf("%d of %d names checked", seen, len(names))
	}
}

// TestPendingCreditFold: a transfer to a user another node owns debits the
// sender and writes a pending credit in one transaction (money conserved
// with the pending sum); the receiver's fold applies it exactly once and
// reports it; the receiver's history shows it only once folded.
func TestPendingCreditFold(t *testing.T) {
	_, pool := mustDB(t)
	ctx := context.Background()
	j := mustJournal(t, journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) }))
	store := NewStore(pool)
	for _, n := range []string{"sa", "sb"} {
		if err := mustAppend(t, j, register(n)); err != nil {
			t.Fatal(err)
		}
	}
	out := actors.Record{Kind: actors.TransferredOut, User: "sa", Peer: "sb", Amount: 30, Key: "k1"}
	if err := mustAppend(t, j, out); err != nil {
		t.Fatal(err)
	}
	assertConserved(t, pool)
	b, err := store.LoadUser(ctx, "sb")
	if err != nil || b.Coins != 1000 || len(b.Received) != 0 {
		t.Fatalf("receiver before the fold: %+v, %v", b, err)
	}
	a, err := store.LoadUser(ctx, "sa")
	if err != nil || a.Coins != 970 || len(a.Sent) != 1 || a.Sent[0].Amount != 30 || a.Keys[0].Kind != actors.Transferred {
		t.Fatalf("sender: %+v, %v", a, err)
	}
	var credits []actors.Credit
	fold := actors.Record{Kind: actors.Folded, Shard: actors.ShardOf("sb"), Credits: &credits}
	if err := mustAppend(t, j, fold); err != nil {
		t.Fatal(err)
	}
	if len(credits) != 1 || credits[0] != (actors.Credit{From: "sa", To: "sb", Amount: 30, Folds: 1}) {
		t.Fatalf("fold reported %+v", credits)
	}
	b, err = store.LoadUser(ctx, "sb")
	if err != nil || b.Coins != 1030 || len(b.Received) != 1 || b.Received[0].Amount != 30 || b.Folds != 1 {
		t.Fatalf("receiver after the fold: %+v, %v", b, err)
	}
	var again []actors.Credit
	fold.Credits = &again
	if err := mustAppend(t, j, fold); err != nil || len(again) != 0 {
		t.Fatalf("second fold: %+v, %v", again, err)
	}
	assertConserved(t, pool)
	if ok, err := store.UserExists(ctx, "sb"); !ok || err != nil {
		t.Fatalf("UserExists(sb) = %v, %v", ok, err)
	}
	if ok, err := store.UserExists(ctx, "nobody"); ok || err != nil {
		t.Fatalf("UserExists(nobody) = %v, %v", ok, err)
	}
}

// tracedDone is a completion that knows its client request's id.
type tracedDone struct {
	done
	id string
}

func (d tracedDone) RequestID() string { return d.id }

// TestRefusedRecordLogNamesRequest: the line a refused record writes names
// the client request it belongs to (X-Request-Id), so an operator can find
// the 500 the client saw.
func TestRefusedRecordLogNamesRequest(t *testing.T) {
	buf := logtest.Capture(t)
	_, pool := mustDB(t)
	j := mustJournal(t, journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) }))
	if err := mustAppend(t, j, register("ian")); err != nil {
		t.Fatal(err)
	}
	hoody := item(t, "pink-hoody")
	ds := make([]tracedDone, 3)
	recs := make([]actors.Record, 3)
	for i := range recs {
		ds[i] = tracedDone{make(done, 1), fmt.Sprintf("req-%d", i)}
		recs[i] = actors.Record{Kind: actors.Purchased, User: "ian", Item: hoody, Amount: hoody.Price(), Done: ds[i]}
		if err := j.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range ds {
		if err := mustWait(t, d.done); (err != nil) != (i == 2) {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if log := buf.String(); !strings.Contains(log, "journal record refused") || !strings.Contains(log, "request_id=req-2") {
		t.Fatalf("the refused record's line does not name its request (request_id=req-2):\n%s", log)
	}
}
