package persist

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"merch/actors"
	"merch/cluster"
)

// heldLeases is the journal's Ownership over Leases.Held, as the lease
// manager provides it.
type heldLeases struct {
	l    *Leases
	node string
	inc  int64
	mu   sync.Mutex
	held map[actors.Shard]uint64
}

func (h *heldLeases) Refresh(ctx context.Context) (int64, error) {
	v, leases, err := h.l.Held(ctx, h.node, h.inc)
	if err != nil {
		return 0, err
	}
	h.set(leases)
	return v, nil
}

func (h *heldLeases) set(leases []cluster.Lease) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = map[actors.Shard]uint64{}
	for _, l := range leases {
		h.held[l.Shard] = l.Epoch
	}
}

func (h *heldLeases) Holds(s actors.Shard, epoch uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.held[s]
	return ok && e == epoch
}

func (h *heldLeases) epoch(tb testing.TB, name string) uint64 {
	tb.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.held[actors.ShardOf(name)]
	if !ok {
		tb.Fatalf("%s's shard not held", name)
	}
	return e
}

type fenceCount struct {
	NopJournalMetrics
	n atomic.Int64
}

func (f *fenceCount) Fenced() { f.n.Add(1) }

// twoShardNames returns two user names in different shards.
func twoShardNames() (string, string) {
	a := "ua"
	for i := 0; ; i++ {
		b := "ub" + string(rune('a'+i))
		if actors.ShardOf(b) != actors.ShardOf(a) {
			return a, b
		}
	}
}

// TestLeaseFence: node A holds the shards of ua and ub; ub's lease expires
// and node B takes it. A's next batch is refused by the fence on the
// server: the record for ub fails with ErrNotOwner (nothing written), the
// record for ua is written again and commits. Renewal returns only what A
// still holds, also after expiry; a single node refuses to start beside a
// live lease.
func TestLeaseFence(t *testing.T) {
	_, pool := mustDB(t)
	ctx := context.Background()
	l := NewLeases(pool)
	ua, ub := twoShardNames()
	fc := &fenceCount{}
	own := &heldLeases{l: l, node: "nA"}
	cfg := journalConfig(pool, func(err error) { t.Errorf("fatal: %v", err) })
	cfg.Writer, cfg.Ownership, cfg.Metrics = "nA", own, fc
	j := mustJournal(t, cfg)
	own.inc = j.Incarnation()
	if err := l.Register(ctx, "nA", own.inc, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	leases, err := l.Acquire(ctx, "nA", own.inc, []actors.Shard{actors.ShardOf(ua), actors.ShardOf(ub)}, time.Hour)
	if err != nil || len(leases) != 2 {
		t.Fatalf("acquire: %v %v", leases, err)
	}
	own.set(leases)
	for _, n := range []string{ua, ub} {
		rec := register(n)
		rec.Epoch = own.epoch(t, n)
		if err := mustAppend(t, j, rec); err != nil {
			t.Fatal(err)
		}
	}
	// ub's lease runs out; B (whose writer row exists) takes it.
	if _, err := pool.Exec(ctx, `UPDATE shard_owner SET expires_at = now() - interval '1 second' WHERE shard = $1`,
		int16(actors.ShardOf(ub))); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO journal_writers (writer, incarnation, last_batch) VALUES ('nB', 1, 0)`); err != nil {
		t.Fatal(err)
	}
	if taken, err := l.Acquire(ctx, "nB", 1, []actors.Shard{actors.ShardOf(ub), actors.ShardOf(ua)}, time.Hour); err != nil || len(taken) != 1 {
		t.Fatalf("B's acquire took %v (%v), want only ub's shard", taken, err)
	}
	pen := item(t, "pen")
	recs := []actors.Record{
		{Kind: actors.Purchased, User: ua, Item: pen, Amount: pen.Price(), Epoch: own.epoch(t, ua)},
		{Kind: actors.Purchased, User: ub, Item: pen, Amount: pen.Price(), Epoch: own.epoch(t, ub)},
	}
	ds := make([]done, len(recs))
	for i := range recs {
		ds[i] = make(done, 1)
		recs[i].Done = ds[i]
		if err := j.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := mustWait(t, ds[0]); err != nil {
		t.Fatalf("ua, still held: %v", err)
	}
	if err := mustWait(t, ds[1]); !errors.Is(err, actors.ErrNotOwner) {
		t.Fatalf("ub, lost: %v, want ErrNotOwner", err)
	}
	if fc.n.Load() == 0 {
		t.Fatal("the fence was not exercised")
	}
	var bought int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM purchases WHERE user_name = $1`, ub).Scan(&bought); err != nil || bought != 0 {
		t.Fatalf("the lost shard's record was written: %d, %v", bought, err)
	}
	var epoch int64
	if err := pool.QueryRow(ctx, `SELECT epoch FROM purchases WHERE user_name = $1`, ua).Scan(&epoch); err != nil ||
		uint64(epoch) != own.epoch(t, ua) {
		t.Fatalf("ledger epoch %d, %v; want %d", epoch, err, own.epoch(t, ua))
	}
	// Renewal: only ua's lease is still A's, also after it expired.
	if _, err := pool.Exec(ctx, `UPDATE shard_owner SET expires_at = now() - interval '1 second' WHERE shard = $1`,
		int16(actors.ShardOf(ua))); err != nil {
		t.Fatal(err)
	}
	kept, err := l.Renew(ctx, "nA", own.inc, leases, time.Hour)
	if err != nil || len(kept) != 1 || kept[0].Shard != actors.ShardOf(ua) {
		t.Fatalf("renew kept %v (%v), want ua's lease", kept, err)
	}
	// A single node refuses to start while B holds a live lease.
	if _, err := l.AcquireAll(ctx, "main", 1); err == nil {
		t.Fatal("AcquireAll beside a live lease of another node")
	}
	owners, nodes, err := l.View(ctx, time.Minute)
	if err != nil || len(owners) != actors.ShardCount || len(nodes) != 1 || !nodes[0].Live {
		t.Fatalf("view: %d owners, nodes %v, %v", len(owners), nodes, err)
	}
	assertConserved(t, pool)
}
