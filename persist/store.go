package persist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
)

// KeyRetention is how long idempotency keys are kept (and honoured).
const KeyRetention = 24 * time.Hour

// Store loads users for the actors. Safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

var _ actors.Store = (*Store)(nil)

// NewStore returns a Store reading through pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// loadUserSQL reads a whole user in one statement, so one snapshot: balance,
// inventory and history always agree (the money invariant is checked on
// them). Received is what was folded: the pair totals less the credits
// still pending (written by the sender's owner, not yet applied here).
const loadUserSQL = `
WITH k AS (
  SELECT key, kind, item, peer, amount, created_at FROM idempotency_keys
  WHERE user_name = $1 AND created_at > now() - $2::interval
  ORDER BY created_at DESC, key LIMIT $3),
r AS (
  SELECT t.from_user, t.amount - coalesce(p.amount, 0) AS amount FROM transfer_totals t
  LEFT JOIN (SELECT from_user, sum(amount) AS amount FROM pending_credits WHERE to_user = $1 GROUP BY 1) p
    USING (from_user)
  WHERE t.to_user = $1)
SELECT u.password_hash, u.balance, u.folds,
  ARRAY(SELECT item FROM inventory WHERE user_name = u.name ORDER BY item),
  ARRAY(SELECT quantity FROM inventory WHERE user_name = u.name ORDER BY item),
  ARRAY(SELECT from_user FROM r WHERE amount > 0 ORDER BY from_user),
  ARRAY(SELECT amount FROM r WHERE amount > 0 ORDER BY from_user),
  ARRAY(SELECT to_user FROM transfer_totals WHERE from_user = u.name ORDER BY to_user),
  ARRAY(SELECT amount FROM transfer_totals WHERE from_user = u.name ORDER BY to_user),
  ARRAY(SELECT key FROM k ORDER BY created_at, key),
  ARRAY(SELECT kind FROM k ORDER BY created_at, key),
  ARRAY(SELECT item FROM k ORDER BY created_at, key),
  ARRAY(SELECT peer FROM k ORDER BY created_at, key),
  ARRAY(SELECT amount FROM k ORDER BY created_at, key)
FROM users u WHERE u.name = $1`

// keysLoadMax bounds the idempotency keys loaded per user; the actor keeps
// at most this many (actors.KeysPerUserMax).
const keysLoadMax = actors.KeysPerUserMax

// LoadUser implements actors.Store.
func (s *Store) LoadUser(ctx context.Context, name string) (actors.UserState, error) {
	var (
		st                          actors.UserState
		items, from, to             []string
		qty, recv, sent             []int64
		keys, kinds, kItems, kPeers []string
		kAmounts                    []int64
	)
	err := s.pool.QueryRow(ctx, loadUserSQL, name, KeyRetention.String(), keysLoadMax).Scan(
		&st.PasswordHash, &st.Coins, &st.Folds, &items, &qty, &from, &recv, &to, &sent,
		&keys, &kinds, &kItems, &kPeers, &kAmounts)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, actors.ErrUnknownUser
	}
	if err != nil {
		return st, fmt.Errorf("persist: load user: %w", err)
	}
	for i, name := range items {
		id, ok := actors.LookupItem([]byte(name))
		if !ok {
			return st, fmt.Errorf("persist: load user: unknown item %q in inventory", name)
		}
		st.Inventory[id] = qty[i]
	}
	for i := range from {
		st.Received = append(st.Received, actors.Counterparty{User: from[i], Amount: actors.Coins(recv[i])})
	}
	for i := range to {
		st.Sent = append(st.Sent, actors.Counterparty{User: to[i], Amount: actors.Coins(sent[i])})
	}
	for i, key := range keys {
		o := actors.KeyedRequest{Key: key, Peer: kPeers[i], Amount: actors.Coins(kAmounts[i])}
		if o.Kind, o.Item, err = parseKeyKind(kinds[i], kItems[i]); err != nil {
			return st, err
		}
		st.Keys = append(st.Keys, o)
	}
	// Pair of the wallet's own check: refuse to serve a user whose stored
	// state breaks the money invariant.
	if _, err := actors.LoadWallet(&st); err != nil {
		return st, fmt.Errorf("persist: user %q: %w", name, err)
	}
	return st, nil
}

// UserExists reports whether name is a user (for transfers to users other
// nodes own: they are never loaded here).
func (s *Store) UserExists(ctx context.Context, name string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE name = $1)`, name).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("persist: user exists: %w", err)
	}
	return ok, nil
}

// Pending reports, for shards, which have pending credits waiting, how
// many there are and how old the oldest is.
func (s *Store) Pending(ctx context.Context, shards []actors.Shard) ([]actors.Shard, int64, time.Duration, error) {
	var got []int16
	var n int64
	var age float64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT to_shard), '{}'), count(*),
  coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM pending_credits WHERE to_shard = ANY($1::smallint[])`, shardArray(shards)).Scan(&got, &n, &age)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("persist: pending credits: %w", err)
	}
	out := make([]actors.Shard, len(got))
	for i, sh := range got {
		out[i] = actors.Shard(sh)
	}
	return out, n, time.Duration(age * float64(time.Second)), nil
}

// KeyApplied implements actors.Store.
func (s *Store) KeyApplied(ctx context.Context, user, key string) (actors.KeyedRequest, bool, error) {
	o := actors.KeyedRequest{Key: key}
	var kind, item string
	var amount int64
	err := s.pool.QueryRow(ctx, `SELECT kind, item, peer, amount FROM idempotency_keys
WHERE user_name = $1 AND key = $2 AND created_at > now() - $3::interval`,
		user, key, KeyRetention.String()).Scan(&kind, &item, &o.Peer, &amount)
	if errors.Is(err, pgx.ErrNoRows) {
		return o, false, nil
	}
	if err != nil {
		return o, false, fmt.Errorf("persist: key lookup: %w", err)
	}
	o.Amount = actors.Coins(amount)
	if o.Kind, o.Item, err = parseKeyKind(kind, item); err != nil {
		return o, false, err
	}
	return o, true, nil
}

func parseKeyKind(kind, item string) (actors.RecordKind, actors.ItemID, error) {
	switch kind {
	case actors.Purchased.String():
		id, _ := actors.LookupItem([]byte(item))
		return actors.Purchased, id, nil
	case actors.Transferred.String():
		return actors.Transferred, 0, nil
	}
	return 0, 0, fmt.Errorf("persist: bad idempotency kind %q", kind)
}

// purgeChunk bounds the rows one purge statement deletes, so a purge never
// holds many row locks or one long transaction.
const purgeChunk = 10_000

// PurgeExpiredKeys deletes idempotency keys older than KeyRetention, in
// chunks, and returns how many it deleted. An expired key is no longer
// honoured (the journal replaces its row when it is reused), so this only
// bounds the table's growth.
func (s *Store) PurgeExpiredKeys(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
SELECT ctid FROM idempotency_keys WHERE created_at <= now() - $1::interval LIMIT $2))`,
			KeyRetention.String(), purgeChunk)
		if err != nil {
			return total, fmt.Errorf("persist: purge keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeChunk {
			return total, nil
		}
	}
}
