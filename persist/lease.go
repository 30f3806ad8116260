package persist

// Shard leases in PostgreSQL: the coordination service and the fence.
//
//  1. shard_owner holds one row per shard: the node and incarnation holding
//     its lease, the lease's epoch and its expiry (database clock). nodes
//     holds the live nodes (heartbeat), for placement and routing.
//  2. Acquire takes a shard only when its lease expired or it is the node's
//     own (a previous incarnation), and increments its epoch. In the same
//     statement it increments the ownership version on the previous owner's
//     journal writer row, which waits for that row's lock: every batch of
//     the previous owner holds it (journal_begin), so the takeover commits
//     after the previous owner's batch in flight, and every later batch of
//     the previous owner fails with MS005 until it has re-read what it
//     holds (Held). Loads by the new owner happen after the takeover, so they
//     see everything the old owner committed. The acquirer's own version
//     is incremented too: a batch it built before it learnt its new epochs
//     (records of an actor of an older epoch) is fenced and re-checked.
//  3. Renew extends leases, guarded by node, incarnation and epoch; a lease
//     is renewable after it expired as long as nobody took it (same epoch),
//     so a database outage does not reshuffle shards.
//  4. Release ends leases at once (planned handoff).
// The node's answering deadline (its clock, from the send time of its last
// successful renewal) is the lease manager's; see package cluster.

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
	"merch/cluster"
)

// Leases reads and writes shard leases: cluster.Store. Safe for concurrent
// use.
type Leases struct{ pool *pgxpool.Pool }

// NewLeases returns Leases over pool.
func NewLeases(pool *pgxpool.Pool) *Leases { return &Leases{pool: pool} }

var _ cluster.Store = (*Leases)(nil)

// Register records the node (a new incarnation) and its internal address,
// heartbeat now.
func (l *Leases) Register(ctx context.Context, node string, incarnation int64, internalAddr string) error {
	_, err := l.pool.Exec(ctx, `INSERT INTO nodes (node_id, incarnation, internal_addr, heartbeat_at)
VALUES ($1, $2, $3, now()) ON CONFLICT (node_id) DO UPDATE
SET incarnation = EXCLUDED.incarnation, internal_addr = EXCLUDED.internal_addr, heartbeat_at = now()`,
		node, incarnation, internalAddr)
	if err != nil {
		return fmt.Errorf("persist: register node: %w", err)
	}
	return nil
}

// Deregister removes the node row (planned shutdown), so placement stops
// counting it at once.
func (l *Leases) Deregister(ctx context.Context, node string, incarnation int64) error {
	_, err := l.pool.Exec(ctx, `DELETE FROM nodes WHERE node_id = $1 AND incarnation = $2`, node, incarnation)
	return err
}

// acquireSQL: $1 node, $2 incarnation, $3 shards, $4 ttl. The prev CTE
// locks the candidate rows (a concurrent acquirer waits, then re-checks
// expiry); bump takes the previous owners' writer rows (see the header).
// PostgreSQL runs every data-modifying CTE to completion, and the statement
// commits only after bump has its locks.
const acquireSQL = `WITH prev AS (
  SELECT shard, node_id FROM shard_owner
  WHERE shard = ANY($3::smallint[]) AND (expires_at < now() OR node_id = $1)
  ORDER BY shard FOR UPDATE),
bump AS (
  UPDATE journal_writers w SET owner_version = owner_version + 1
  WHERE EXISTS (SELECT 1 FROM prev)
    AND (w.writer = $1 OR w.writer IN (SELECT node_id FROM prev WHERE node_id <> '')) RETURNING 1)
UPDATE shard_owner o SET node_id = $1, incarnation = $2, epoch = o.epoch + 1,
  expires_at = now() + $4::interval
FROM prev WHERE o.shard = prev.shard
RETURNING o.shard, o.epoch`

// Acquire takes those of shards whose lease expired or is the node's own,
// for ttl, and returns them with their new epochs.
func (l *Leases) Acquire(ctx context.Context, node string, incarnation int64, shards []actors.Shard, ttl time.Duration) ([]cluster.Lease, error) {
	if len(shards) == 0 {
		return nil, nil
	}
	rows, err := l.pool.Query(ctx, acquireSQL, node, incarnation, shardArray(shards), ttl.String())
	if err != nil {
		return nil, fmt.Errorf("persist: acquire shards: %w", err)
	}
	return scanLeases(rows)
}

// AcquireAll takes every shard for a node that runs alone, with no expiry:
// nothing renews it and nobody else may take it. It refuses (and takes
// nothing) while another node holds a live lease.
func (l *Leases) AcquireAll(ctx context.Context, node string, incarnation int64) ([]cluster.Lease, error) {
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("persist: acquire all shards: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var busy []string
	err = tx.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT node_id), '{}') FROM shard_owner
WHERE expires_at > now() AND node_id NOT IN ('', $1)`, node).Scan(&busy)
	if err != nil {
		return nil, fmt.Errorf("persist: acquire all shards: %w", err)
	}
	if len(busy) > 0 {
		return nil, fmt.Errorf("persist: shards are leased by other nodes %v: start this node with INTERNAL_ADDR to join them", busy)
	}
	rows, err := tx.Query(ctx, `UPDATE shard_owner SET node_id = $1, incarnation = $2, epoch = epoch + 1,
  expires_at = 'infinity' RETURNING shard, epoch`, node, incarnation)
	if err != nil {
		return nil, fmt.Errorf("persist: acquire all shards: %w", err)
	}
	leases, err := scanLeases(rows)
	if err != nil {
		return nil, err
	}
	return leases, tx.Commit(ctx)
}

// Renew extends leases for ttl (guarded by node, incarnation and epoch, so
// an expired lease nobody took is renewed too), heartbeats the node, and
// returns the leases still held.
func (l *Leases) Renew(ctx context.Context, node string, incarnation int64, leases []cluster.Lease, ttl time.Duration) ([]cluster.Lease, error) {
	shards, epochs := leaseArrays(leases)
	rows, err := l.pool.Query(ctx, `WITH hb AS (
  UPDATE nodes SET heartbeat_at = now() WHERE node_id = $1 AND incarnation = $2 RETURNING 1)
UPDATE shard_owner o SET expires_at = now() + $5::interval
FROM unnest($3::smallint[], $4::bigint[]) AS m(s, e)
WHERE o.shard = m.s AND o.epoch = m.e AND o.node_id = $1 AND o.incarnation = $2
RETURNING o.shard, o.epoch`, node, incarnation, shards, epochs, ttl.String())
	if err != nil {
		return nil, fmt.Errorf("persist: renew leases: %w", err)
	}
	return scanLeases(rows)
}

// Release ends leases now (planned handoff): a target may acquire them at
// once.
func (l *Leases) Release(ctx context.Context, node string, incarnation int64, leases []cluster.Lease) error {
	shards, epochs := leaseArrays(leases)
	_, err := l.pool.Exec(ctx, `UPDATE shard_owner o SET expires_at = '-infinity'
FROM unnest($3::smallint[], $4::bigint[]) AS m(s, e)
WHERE o.shard = m.s AND o.epoch = m.e AND o.node_id = $1 AND o.incarnation = $2`,
		node, incarnation, shards, epochs)
	if err != nil {
		return fmt.Errorf("persist: release leases: %w", err)
	}
	return nil
}

// Held returns the leases the node's incarnation holds and its writer's
// ownership version, in one snapshot (the journal's refresh after a fence).
func (l *Leases) Held(ctx context.Context, node string, incarnation int64) (int64, []cluster.Lease, error) {
	var version int64
	var shards []int16
	var epochs []int64
	err := l.pool.QueryRow(ctx, `SELECT
  (SELECT owner_version FROM journal_writers WHERE writer = $1),
  ARRAY(SELECT shard FROM shard_owner WHERE node_id = $1 AND incarnation = $2 ORDER BY shard),
  ARRAY(SELECT epoch FROM shard_owner WHERE node_id = $1 AND incarnation = $2 ORDER BY shard)`,
		node, incarnation).Scan(&version, &shards, &epochs)
	if err != nil {
		return 0, nil, fmt.Errorf("persist: held leases: %w", err)
	}
	leases := make([]cluster.Lease, len(shards))
	for i := range shards {
		leases[i] = cluster.Lease{Shard: actors.Shard(shards[i]), Epoch: uint64(epochs[i])}
	}
	return version, leases, nil
}

// View returns every shard's owner and the nodes, in one snapshot; a node
// is live when its heartbeat is younger than liveFor.
func (l *Leases) View(ctx context.Context, liveFor time.Duration) ([]cluster.Owner, []cluster.Node, error) {
	tx, err := l.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, nil, fmt.Errorf("persist: lease view: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	rows, err := tx.Query(ctx, `SELECT shard, node_id, incarnation, epoch, expires_at > now() FROM shard_owner ORDER BY shard`)
	if err != nil {
		return nil, nil, fmt.Errorf("persist: lease view: %w", err)
	}
	owners := make([]cluster.Owner, 0, actors.ShardCount)
	for rows.Next() {
		var o cluster.Owner
		var s int16
		var e int64
		if err := rows.Scan(&s, &o.Node, &o.Incarnation, &e, &o.Live); err != nil {
			rows.Close()
			return nil, nil, err
		}
		o.Shard, o.Epoch = actors.Shard(s), uint64(e)
		owners = append(owners, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	nrows, err := tx.Query(ctx, `SELECT node_id, incarnation, internal_addr, heartbeat_at > now() - $1::interval
FROM nodes ORDER BY node_id`, liveFor.String())
	if err != nil {
		return nil, nil, fmt.Errorf("persist: lease view: %w", err)
	}
	var nodes []cluster.Node
	for nrows.Next() {
		var n cluster.Node
		if err := nrows.Scan(&n.ID, &n.Incarnation, &n.InternalAddr, &n.Live); err != nil {
			nrows.Close()
			return nil, nil, err
		}
		nodes = append(nodes, n)
	}
	nrows.Close()
	return owners, nodes, nrows.Err()
}

func scanLeases(rows pgx.Rows) ([]cluster.Lease, error) {
	defer rows.Close()
	var out []cluster.Lease
	for rows.Next() {
		var s int16
		var e int64
		if err := rows.Scan(&s, &e); err != nil {
			return nil, err
		}
		out = append(out, cluster.Lease{Shard: actors.Shard(s), Epoch: uint64(e)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("persist: leases: %w", err)
	}
	return out, nil
}

func shardArray(shards []actors.Shard) []int16 {
	out := make([]int16, len(shards))
	for i, s := range shards {
		out[i] = int16(s)
	}
	return out
}

func leaseArrays(leases []cluster.Lease) ([]int16, []int64) {
	shards, epochs := make([]int16, len(leases)), make([]int64, len(leases))
	for i, l := range leases {
		shards[i], epochs[i] = int16(l.Shard), int64(l.Epoch)
	}
	return shards, epochs
}
