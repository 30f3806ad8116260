package persist

// The statements of a journal batch, in the order batch.queue sends them
// (fold, registrations, ledgers, balances, inventory, totals, pending
// credits, keys), each set-based over unnest arrays.
const (
	beginSQL    = `SELECT journal_begin($1, $2, $3, $4)`
	registerSQL = `INSERT INTO users (name, password_hash, balance, shard)
SELECT n, h, $3, s FROM unnest($1::text[], $2::bytea[], $4::smallint[]) AS t(n, h, s)
ON CONFLICT (name) DO NOTHING RETURNING name`
	purchasesSQL = `INSERT INTO purchases (batch, user_name, item, price, shard, epoch)
SELECT $1, u, i, p, s, e FROM unnest($2::text[], $3::text[], $4::bigint[], $5::smallint[], $6::bigint[]) AS t(u, i, p, s, e)`
	transfersSQL = `INSERT INTO transfers (batch, from_user, to_user, amount, shard, epoch)
SELECT $1, f, t, a, s, e FROM unnest($2::text[], $3::text[], $4::bigint[], $5::smallint[], $6::bigint[]) AS x(f, t, a, s, e)`
	// balanceSQL aborts the batch on the server (MS003) unless it updated
	// exactly one row per name: a missing user is a broken invariant, and
	// nothing of the batch may commit then.
	balanceSQL = `WITH u AS (
  UPDATE users SET balance = users.balance + d.delta
  FROM unnest($1::text[], $2::bigint[]) AS d(name, delta) WHERE users.name = d.name RETURNING 1)
SELECT journal_assert(count(*) = cardinality($1::text[]),
  'balance update touched ' || count(*) || ' of ' || cardinality($1::text[]) || ' users') FROM u`
	inventorySQL = `INSERT INTO inventory (user_name, item, quantity, shard)
SELECT u, i, q, s FROM unnest($1::text[], $2::text[], $3::bigint[], $4::smallint[]) AS t(u, i, q, s)
ON CONFLICT (user_name, item) DO UPDATE SET quantity = inventory.quantity + EXCLUDED.quantity`
	totalsSQL = `INSERT INTO transfer_totals (from_user, to_user, amount, shard)
SELECT f, t, a, s FROM unnest($1::text[], $2::text[], $3::bigint[], $4::smallint[]) AS x(f, t, a, s)
ON CONFLICT (from_user, to_user) DO UPDATE SET amount = transfer_totals.amount + EXCLUDED.amount`
	// expireKeysSQL deletes expired rows of the batch's keys, so a key
	// reused after KeyRetention is stored afresh. A live key's row stays,
	// and its primary key refuses a second change under it. One primary-key
	// lookup per key (migration 0004: a join's cached plan can seq-scan).
	expireKeysSQL = `SELECT merch_expire_keys($1::text[], $2::text[], $3::interval)`
	// pendingSQL writes the credits of transfers to other owners' users.
	pendingSQL = `INSERT INTO pending_credits (from_shard, to_shard, from_user, to_user, amount)
SELECT * FROM unnest($1::smallint[], $2::smallint[], $3::text[], $4::text[], $5::bigint[])`
	// foldSQL applies and deletes the pending credits of the batch's fold
	// shards in one statement: each row is deleted by exactly one fold, and
	// the receivers' fold counters tell a live actor which folds it has.
	foldSQL = `WITH d AS (
  DELETE FROM pending_credits WHERE to_shard = ANY($1::smallint[])
  RETURNING from_user, to_user, amount),
s AS (SELECT to_user, sum(amount) AS amount FROM d GROUP BY to_user),
u AS (
  UPDATE users SET balance = users.balance + s.amount, folds = users.folds + 1
  FROM s WHERE users.name = s.to_user RETURNING users.name, users.folds)
SELECT d.from_user, d.to_user, d.amount, u.folds FROM d JOIN u ON u.name = d.to_user`
	keysSQL = `INSERT INTO idempotency_keys (user_name, key, kind, item, peer, amount, shard)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::smallint[])`
)
