package persist

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestKeyExpiryPlanIgnoresTableSize: the statement that deletes expired
// rows of a batch's keys must find them through the primary key whatever
// the planner believed about the table when it cached the plan. The
// journal's statements are prepared once per connection; a generic plan
// made while idempotency_keys was nearly empty (a fresh database, stale
// statistics) used to be a hash join over a sequential scan of the whole
// table — under keyed load every batch then read every key stored in the
// last 24 h (seen under make bench-http: 2–3 ms per batch and growing,
// keyed writes at 40 % of unkeyed ones).
//
// The state is made, not waited for: the plan is forced generic and built
// on an empty table, the table then grows without new statistics, and
// auto_explain reports the plan the next execution runs, nested
// statements included, as notices to this connection.
func TestKeyExpiryPlanIgnoresTableSize(t *testing.T) {
	url, pool := mustDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `ALTER TABLE idempotency_keys SET (autovacuum_enabled = off)`); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var plans []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		plans = append(plans, n.Message)
		mu.Unlock()
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`SET plan_cache_mode = force_generic_plan`,
		`LOAD 'auto_explain'`,
		`SET auto_explain.log_min_duration = 0`,
		`SET auto_explain.log_nested_statements = on`,
		`SET auto_explain.log_level = notice`,
		`SET client_min_messages = notice`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	users, keys := []string{"kim", "lee"}, []string{"k1", "k2"}
	expire := func() string {
		mu.Lock()
		plans = plans[:0]
		mu.Unlock()
		if _, err := conn.Exec(ctx, expireKeysSQL, users, keys, KeyRetention.String()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(plans, "\n")
	}
	expire() // the plan is made on an empty table and cached
	if _, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (user_name, key, kind, amount, shard)
SELECT 'u' || (i % 1000), 'k' || i, 'purchased', 10, merch_shard('u' || (i % 1000))
FROM generate_series(1, 20000) AS i`); err != nil {
		t.Fatal(err)
	}
	plan := expire()
	if !strings.Contains(plan, "idempotency_keys") {
		t.Fatalf("auto_explain showed no plan touching idempotency_keys:\n%s", plan)
	}
	if strings.Contains(plan, "Seq Scan on idempotency_keys") || !strings.Contains(plan, "idempotency_keys_pkey") {
		t.Fatalf("expiring a batch's keys does not look them up by primary key:\n%s", plan)
	}
}
