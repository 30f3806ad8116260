//go:build !race

// The race detector makes sync.Pool drop items at random, so allocation
// counts are only meaningful without it.

package main

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestRequestPathDoesNotAllocate guards the generator's own footprint: it
// shares the CPUs with the service under test, so steady-state requests
// must reuse everything.
func TestRequestPathDoesNotAllocate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = serveStatic(ctx, ln) }()

	cfg := testConfig(t, ln.Addr().String(), "info=1")
	cfg.NoSetup = true
	tg := newTarget(cfg.Addr, 2, time.Second, cfg.FundsMsg)
	defer tg.client.CloseIdleConnections()
	if err := prepareUsers(ctx, tg, &cfg, nil); err != nil {
		t.Fatal(err)
	}
	tg.keyRun = newKeyRun() // writes carry their Idempotency-Key, as by default
	w := newWorker(tg, newRecorder(1).shardFor(0), 0, 1)
	defer w.release()
	for o := range numOps {
		for range 50 { // warm the connection and fasthttp's buffers
			w.do(o, time.Now(), true)
		}
		allocs := testing.AllocsPerRun(300, func() { w.do(o, time.Now(), true) })
		if allocs >= 1 {
			t.Errorf("%s: %.2f allocations per request, want 0", opNames[o], allocs)
		}
	}
	if w.sh.ep[opInfo].status[200].Load() == 0 {
		t.Error("no successful info requests recorded")
	}
}
