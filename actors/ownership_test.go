package actors

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// testOwner holds the shards a test gives it, under the epochs it says.
type testOwner struct {
	mu     sync.Mutex
	epochs map[Shard]uint64
}

func newOwner(held map[Shard]uint64) *testOwner { return &testOwner{epochs: held} }

func (o *testOwner) Lease(s Shard) (uint64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.epochs[s]
	return e, ok
}

func (o *testOwner) set(s Shard, epoch uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if epoch == 0 {
		delete(o.epochs, s)
		return
	}
	o.epochs[s] = epoch
}

// namesInTwoShards returns two user names in different shards.
func namesInTwoShards() (string, string) {
	a := "oa"
	for _, b := range []string{"ob", "oc", "od", "oe", "of", "og"} {
		if ShardOf(b) != ShardOf(a) {
			return a, b
		}
	}
	panic("no two shards")
}

// TestOwnership: a user whose shard the node does not hold answers
// ErrNotOwner (and is never loaded); records carry the lease's epoch; an
// actor loaded under an older epoch is replaced (reloaded) when the
// epoch changes; DrainShard passivates a shard's actors.
func TestOwnership(t *testing.T) {
	a, b := namesInTwoShards()
	own := newOwner(map[Shard]uint64{ShardOf(a): 3})
	cfg := testConfig()
	cfg.Owner = own
	e := mustNewEnv(t, cfg, liveJournal, a, b)
	var mu sync.Mutex
	var epochs []uint64
	e.journal.SetRefuse(func(rec *Record) error {
		mu.Lock()
		epochs = append(epochs, rec.Epoch)
		mu.Unlock()
		return nil
	})
	if _, err := e.sys.Info(b); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Info of a user in a shard not held = %v, want ErrNotOwner", err)
	}
	if n := e.store.LoadCount(b); n != 0 {
		t.Fatalf("a user of another node was loaded %d times", n)
	}
	if err := e.sys.Register(b+"x", []byte("h")); ShardOf(b+"x") != ShardOf(a) && !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Register in a shard not held = %v", err)
	}
	if err := e.sys.Buy(a, pen, ""); err != nil {
		t.Fatal(err)
	}
	own.set(ShardOf(a), 4) // lost and taken back: a new epoch
	if err := e.sys.Buy(a, pen, ""); err != nil {
		t.Fatal(err)
	}
	if n := e.store.LoadCount(a); n != 2 {
		t.Fatalf("%d loads: the actor of epoch 3 was served under epoch 4", n)
	}
	mu.Lock()
	got := append([]uint64(nil), epochs...)
	mu.Unlock()
	if len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("record epochs %v, want [3 4]", got)
	}
	e.mustSee(t, a, want{coins: 980, items: map[ItemID]int64{pen: 2}})
	if e.sys.PassivateIdle(1<<62) != 1 {
		t.Fatalf("resident before the drain: %d", e.sys.PassivateIdle(1<<62))
	}
	e.sys.DrainShard(context.Background(), ShardOf(a))
	if n := e.sys.PassivateIdle(1 << 62); n != 0 {
		t.Fatalf("%d actors resident after DrainShard", n)
	}
}
