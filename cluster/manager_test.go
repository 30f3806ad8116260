package cluster_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"merch/actors"
	"merch/cluster"
	"merch/internal/pgtest"
	"merch/persist"
)

var pg *pgtest.Cluster

func TestMain(m *testing.M) {
	var err error
	pg, err = pgtest.Start(pgtest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster tests need PostgreSQL:", err)
		os.Exit(1)
	}
	code := m.Run()
	pg.Close()
	os.Exit(code)
}

var dbSeq atomic.Int64

func mustLeases(tb testing.TB) *persist.Leases {
	tb.Helper()
	url, err := pg.CreateDatabase(fmt.Sprintf("c%d", dbSeq.Add(1)))
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if _, err := persist.Migrate(ctx, url); err != nil {
		tb.Fatal(err)
	}
	pool, err := persist.Open(ctx, url, 4)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return persist.NewLeases(pool)
}

// clock is a manual monotonic clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// node is a Manager with its callbacks recorded.
type node struct {
	m       *cluster.Manager
	clock   *clock
	mu      sync.Mutex
	drained map[actors.Shard]int
	lost    map[actors.Shard]int
}

func mustNode(tb testing.TB, store cluster.Store, id string, inc int64, ttl time.Duration) *node {
	tb.Helper()
	n := &node{clock: &clock{now: time.Unix(1000, 0)}, drained: map[actors.Shard]int{}, lost: map[actors.Shard]int{}}
	m, err := cluster.NewManager(cluster.Config{Node: id, Incarnation: inc, InternalAddr: id + ":1",
		TTL: ttl, RenewEvery: ttl / 3, Margin: ttl / 6, Store: store, Now: n.clock.Now,
		Drain: func(_ context.Context, s actors.Shard) { n.mu.Lock(); n.drained[s]++; n.mu.Unlock() },
		Lost: func(shards []actors.Shard) {
			n.mu.Lock()
			for _, s := range shards {
				n.lost[s]++
			}
			n.mu.Unlock()
		}})
	if err != nil {
		tb.Fatal(err)
	}
	if err := store.Register(context.Background(), id, inc, id+":1"); err != nil {
		tb.Fatal(err)
	}
	n.m = m
	return n
}

func (n *node) held() int {
	c := 0
	for s := range actors.ShardCount {
		if _, ok := n.m.Lease(actors.Shard(s)); ok {
			c++
		}
	}
	return c
}

// TestPlacementAndHandoff: a node alone takes every shard; when a second
// node joins, the first drains and releases exactly the shards placed on
// the second, which acquires them; every shard then has one owner, the
// one Target names.
func TestPlacementAndHandoff(t *testing.T) {
	store := mustLeases(t)
	ctx := context.Background()
	a := mustNode(t, store, "na", 1, time.Hour)
	a.m.Tick(ctx)
	if h := a.held(); h != actors.ShardCount {
		t.Fatalf("a alone holds %d shards", h)
	}
	b := mustNode(t, store, "nb", 1, time.Hour)
	b.m.Tick(ctx) // sees a's live leases: acquires nothing yet
	if h := b.held(); h != 0 {
		t.Fatalf("b took %d live shards", h)
	}
	a.m.Tick(ctx) // sees b live: hands off b's targets
	b.m.Tick(ctx) // acquires them
	live := []string{"na", "nb"}
	for s := range actors.ShardCount {
		sh := actors.Shard(s)
		_, ina := a.m.Lease(sh)
		_, inb := b.m.Lease(sh)
		want := cluster.Target(sh, live)
		if ina == inb || (want == "na") != ina {
			t.Fatalf("shard %d: a %v, b %v, target %s", s, ina, inb, want)
		}
		if !ina && a.drained[sh] != 1 {
			t.Fatalf("shard %d moved to b without a drain on a", s)
		}
	}
	if a.held() < 64 || b.held() < 64 {
		t.Fatalf("placement is lopsided: a %d, b %d", a.held(), b.held())
	}
	// Routing: both see the same owner for every shard.
	a.m.Tick(ctx)
	for s := range actors.ShardCount {
		na, _, oka := a.m.Owner(actors.Shard(s))
		nb, _, okb := b.m.Owner(actors.Shard(s))
		if !oka || !okb || na != nb {
			t.Fatalf("shard %d: a routes to %q (%v), b to %q (%v)", s, na, oka, nb, okb)
		}
	}
}

// TestLocalDeadline: a node stops answering for its shards when its clock
// passes the local deadline (send time of the last renewal + TTL − margin)
// even though the database lease is still valid; a successful renewal
// lets it answer again with the same epoch.
func TestLocalDeadline(t *testing.T) {
	store := mustLeases(t)
	ctx := context.Background()
	a := mustNode(t, store, "na", 1, time.Hour)
	a.m.Tick(ctx)
	e, ok := a.m.Lease(7)
	if !ok {
		t.Fatal("shard 7 not held")
	}
	a.clock.Add(time.Hour - time.Hour/6 - time.Second)
	if _, ok := a.m.Lease(7); !ok {
		t.Fatal("stopped answering before the local deadline")
	}
	a.clock.Add(2 * time.Second)
	if _, ok := a.m.Lease(7); ok {
		t.Fatal("answers past the local deadline")
	}
	a.m.Tick(ctx) // renews (same epoch)
	if e2, ok := a.m.Lease(7); !ok || e2 != e {
		t.Fatalf("after renewal: epoch %d (%v), want %d", e2, ok, e)
	}
}

// TestTakeoverAndRestart: a node that stops renewing (paused) loses its
// shards to a live peer once the leases expire (database clock); when it
// resumes, its renewal fails and it drops them (Lost). A node restarting
// with a new incarnation takes its own previous shards back at once.
func TestTakeoverAndRestart(t *testing.T) {
	store := mustLeases(t)
	ctx := context.Background()
	const ttl = 900 * time.Millisecond
	a := mustNode(t, store, "na", 1, ttl)
	a.m.Tick(ctx)
	b := mustNode(t, store, "nb", 1, ttl)
	// a is paused: no ticks. b's heartbeats keep it live; a's go stale,
	// and its leases expire in the database, so b takes everything.
	deadline := time.Now().Add(10 * time.Second)
	for b.held() != actors.ShardCount {
		if time.Now().After(deadline) {
			t.Fatalf("b holds %d shards after a stopped renewing", b.held())
		}
		b.clock.Add(ttl / 3)
		b.m.Tick(ctx)
		time.Sleep(ttl / 3) // the database's clock must pass a's expiry: this waits for it
	}
	// a resumes: its renewal is refused for every shard; it drops them all.
	a.clock.Add(10 * ttl)
	a.m.Tick(ctx)
	if a.held() != 0 || len(a.lost) != actors.ShardCount {
		t.Fatalf("a after resuming: holds %d, lost %d", a.held(), len(a.lost))
	}
	// b restarts (incarnation 2): the shards placed on it among the live
	// nodes (a heartbeats again) come back at once, not after the TTL.
	b2 := mustNode(t, store, "nb", 2, ttl)
	b2.m.Tick(ctx)
	want := 0
	for s := range actors.ShardCount {
		if cluster.Target(actors.Shard(s), []string{"na", "nb"}) == "nb" {
			want++
		}
	}
	if b2.held() != want {
		t.Fatalf("restarted b holds %d shards at once, want its %d", b2.held(), want)
	}
}

// countingStore counts View reads.
type countingStore struct {
	cluster.Store
	views atomic.Int64
}

func (c *countingStore) View(ctx context.Context, liveFor time.Duration) ([]cluster.Owner, []cluster.Node, error) {
	c.views.Add(1)
	return c.Store.View(ctx, liveFor)
}

// TestRefreshView: shard 7 moves from a to c after b read its view (and
// refreshed it once more just before, for another request). A burst of
// refreshes after the move — concurrent misdirected requests — reads the
// owners once in all, and every one of them then routes by the fresh
// view: a read that began before a refresh was asked never stands in for
// it.
func TestRefreshView(t *testing.T) {
	leases := mustLeases(t)
	ctx := context.Background()
	a := mustNode(t, leases, "na", 1, time.Hour)
	a.m.Tick(ctx) // alone: a takes every shard
	store := &countingStore{Store: leases}
	b := mustNode(t, store, "nb", 1, time.Hour)
	b.m.Tick(ctx) // a's leases are live: b takes none, its view names a
	if node, _, ok := b.m.Owner(7); !ok || node != "na" {
		t.Fatalf("b routes shard 7 to %q (%v)", node, ok)
	}
	b.clock.Add(time.Millisecond)
	b.m.RefreshView(ctx)
	mustNode(t, leases, "nc", 1, time.Hour)
	e, _ := a.m.Lease(7)
	if err := leases.Release(ctx, "na", 1, []cluster.Lease{{Shard: 7, Epoch: e}}); err != nil {
		t.Fatal(err)
	}
	if got, err := leases.Acquire(ctx, "nc", 1, []actors.Shard{7}, time.Hour); err != nil || len(got) != 1 {
		t.Fatalf("c acquires shard 7: %v %v", got, err)
	}
	b.clock.Add(time.Millisecond)
	before := store.views.Load()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() { defer wg.Done(); b.m.RefreshView(ctx) }()
	}
	wg.Wait()
	if n := store.views.Load() - before; n != 1 {
		t.Errorf("16 refreshes asked at once read the owners %d times, want 1", n)
	}
	if node, _, ok := b.m.Owner(7); !ok || node != "nc" {
		t.Errorf("after the refresh b routes shard 7 to %q (ok %v), want nc", node, ok)
	}
}
