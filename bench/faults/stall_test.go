package faults

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"merch/bench/harness"
	"merch/internal/pgtest"
	"merch/internal/relay"
	"merch/persist"
)

// Stalls: the database stops answering for longer than a journal attempt
// (AttemptTimeout 5 s) while a batch is committing, then comes back. A
// timed-out attempt may still commit after its retry began. Both tests
// check the same promises: the process never exits, writes recover by
// themselves, every acknowledged change is present exactly once (keyed
// ops by their keys, un-keyed transfers by the client-side bounds of each
// pair's total), no batch id was written by two transactions, memory and
// database agree, and the audits pass.

// TestFaultDiskStall freezes PostgreSQL's data directory (fsfreeze of a
// loop-mounted file system) for 8 s under load: a commit stuck in its WAL
// write, where a cancel cannot reach it.
func TestFaultDiskStall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fsfreeze and loop mounts need root (CI runs as root)")
	}
	mnt := mustLoopMount(t)
	pg, err := pgtest.Start(pgtest.Options{Dir: mnt, Log: io.Discard}) // its log must not live on the frozen disk
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	dbURL, err := pg.CreateDatabase("stall")
	if err != nil {
		t.Fatal(err)
	}
	stall := 8 * time.Second
	runStall(t, dbURL, nil, func() (heal func() <-chan struct{}) {
		fsfreeze(t, "-f", mnt)
		t.Cleanup(func() { _ = exec.Command("fsfreeze", "-u", mnt).Run() }) // never leave it frozen
		time.Sleep(stall)                                                   // the fault's length, not a synchronisation
		return func() <-chan struct{} {
			fsfreeze(t, "-u", mnt)
			return closed
		}
	})
}

// TestFaultPartitionHeals cuts the service off PostgreSQL for a seeded
// 13–20 s through a relay that holds every byte, then heals it the way TCP
// does: new connections pass at once, while the bytes of connections from
// before the partition (among them a timed-out batch attempt) arrive a
// seeded 2–12 s after the heal.
func TestFaultPartitionHeals(t *testing.T) {
	seed := harness.Seed(t, "FAULT_SEED", "./bench/faults")
	rng := rand.New(rand.NewPCG(seed, 13))
	partition := 13*time.Second + time.Duration(rng.Int64N(int64(7*time.Second)))
	late := 2*time.Second + time.Duration(rng.Int64N(int64(10*time.Second)))
	t.Logf("partition %v, old connections delivered %v after the heal", partition.Round(time.Millisecond), late.Round(time.Millisecond))
	dbURL := harness.MustDatabase(t)
	target := "127.0.0.1:" + strconv.Itoa(harness.Cluster.Port())
	r, err := relay.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	var partitioned atomic.Bool
	var mu sync.Mutex
	var during []*relay.Conn
	r.OnAccept(func(c *relay.Conn) {
		if partitioned.Load() {
			c.Hold()
			mu.Lock()
			during = append(during, c)
			mu.Unlock()
		}
	})
	viaRelay := strings.Replace(dbURL, target, r.Addr(), 1)
	var old []*relay.Conn
	serverLog := runStall(t, dbURL, &viaRelay, func() (heal func() <-chan struct{}) {
		// Start the partition between two batches, so the next batch is
		// sent into it and held before it reaches the server: that attempt
		// times out, and after the heal it arrives late, once its retry has
		// committed.
		pauseLoad.Lock()
		partitioned.Store(true)
		old = r.Conns()
		for _, c := range old {
			c.Hold()
		}
		pauseLoad.Unlock()
		time.Sleep(partition) // the fault's length
		return func() <-chan struct{} {
			partitioned.Store(false)
			mu.Lock()
			for _, c := range during {
				c.Release()
			}
			mu.Unlock()
			delivered := make(chan struct{})
			go func() {
				time.Sleep(late) // retransmission after the heal, part of the fault
				for _, c := range old {
					c.Release()
				}
				// Every old connection has delivered its bytes and ended.
				harness.WaitUntil(30*time.Second, func() bool {
					for _, c := range old {
						if !c.Closed() {
							return false
						}
					}
					return true
				})
				close(delivered)
			}()
			return delivered
		}
	})
	// The timed-out attempt that arrived after the heal was refused by the
	// server (journal_begin: its batch is already committed, or the marker
	// is past it), not applied.
	pglog := harness.Cluster.LogTail()
	refused := strings.Count(pglog, "is already committed") + strings.Count(pglog, "is past batch")
	t.Logf("late attempts refused by the server's fence: %d (PostgreSQL log)", refused)
	if refused == 0 {
		t.Fatalf("no late attempt reached the server: the fence was not exercised; server log:\n%s\nPostgreSQL log:\n%s",
			serverLog, harness.Cluster.LogTail())
	}
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// runStall runs the load, the fault (stall returns once the fault has
// lasted; heal ends it) and every check. serverURL, when set, is what the
// server connects through; dbURL is the database itself.
func runStall(t *testing.T, dbURL string, serverURL *string, stall func() (heal func() <-chan struct{})) (serverLog string) {
	url := dbURL
	if serverURL != nil {
		url = *serverURL
	}
	srv := harness.NewServer(t, url, "LOG_LEVEL=info")
	srv.Start()
	c := harness.NewClient(srv.Addr, 64, 3*time.Second)
	keyed := register(t, c, "s", 12)
	plain := register(t, c, "p", 8)
	prober := register(t, c, "x", 1) // writes only the recovery probe
	ctx, cancel := context.WithCancel(context.Background())
	var ops, plainOps []*op
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ops = chaos(ctx, c, keyed, 8) }()
	go func() { defer wg.Done(); plainOps = plainTransfers(ctx, c, plain, 4) }()
	time.Sleep(time.Second) // load before the fault
	heal := stall()
	delivered := heal()
	healed := time.Now()
	// Writes recover by themselves: the first acknowledged write after the
	// heal, polled with one keyed buy (retries of one key apply it once).
	var recovered time.Duration
	probe := &op{user: prober.names[0], key: "recovery", buy: true, item: "pen", outcome: ok}
	tok := prober.tokens[probe.user]
	seen := map[string]int{} // probe answers, for the failure message
	for {
		r := probe.send(c, tok)
		if r.Code == 200 {
			recovered = time.Since(healed)
			break
		}
		seen[fmt.Sprintf("%d %s %v", r.Code, r.Body, r.Err)]++
		if time.Since(healed) > 30*time.Second {
			t.Fatalf("no write succeeded within 30 s of the heal; answers %v; log:\n%s", seen, srv.LogText())
		}
		time.Sleep(50 * time.Millisecond) // poll
	}
	time.Sleep(time.Second) // load after the recovery
	<-delivered             // the fault's last bytes have arrived
	cancel()
	wg.Wait()
	if !srv.Alive() {
		t.Fatalf("the server exited during the stall; log:\n%s", srv.LogText())
	}
	before := count(ops)
	resolve(t, c, keyed, ops)
	after := count(ops)
	checkKeys(t, dbURL, append(ops, probe))
	checkPlain(t, dbURL, plainOps)
	harness.AuditBatches(t, dbURL)
	harness.AuditDB(t, dbURL, len(keyed.names)+len(plain.names)+1)
	all := map[string]string{}
	for _, p := range []population{keyed, plain, prober} {
		for n, tok := range p.tokens {
			all[n] = tok
		}
	}
	harness.AuditAPI(t, c, all)
	harness.AuditMemoryMatchesDB(t, c, all, dbURL)
	pt := count(plainOps)
	log := srv.LogText()
	t.Logf("journal: %d failing streaks, %d batches found committed by an earlier attempt",
		strings.Count(log, "journal write failed"), strings.Count(log, "found committed by an earlier attempt"))
	t.Logf("keyed: %d ops, %d ok, %d refused, %d unknown (resolved: %d ok); plain transfers: %d ok, %d refused, %d unknown; first write %v after the heal; server alive",
		len(ops), before.ok, before.fail, before.unknown, after.ok, pt.ok, pt.fail, pt.unknown, recovered.Round(time.Millisecond))
	return log
}

// plainTransfers runs workers doing un-keyed transfers (a retry could not
// be told from a new request, so nothing is retried) until ctx ends.
func plainTransfers(ctx context.Context, c *harness.Client, p population, workers int) []*op {
	var mu sync.Mutex
	var all []*op
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 77))
			var mine []*op
			for ctx.Err() == nil {
				pauseLoad.RLock()
				u := rng.IntN(len(p.names))
				o := &op{user: p.names[u], peer: p.names[(u+1+rng.IntN(len(p.names)-1))%len(p.names)],
					amount: int64(rng.IntN(20) + 1)}
				r := o.send(c, p.tokens[o.user])
				pauseLoad.RUnlock()
				o.outcome, o.code = classify(r), r.Code
				mine = append(mine, o)
				if r.Code == 0 || r.Code == 503 {
					time.Sleep(5 * time.Millisecond) // do not spin while writes are refused
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all
}

// checkPlain: for every pair, the database's total lies between the sum
// of acknowledged transfers and that sum plus every unknown one; a batch
// applied twice would exceed it.
func checkPlain(tb testing.TB, dbURL string, ops []*op) {
	tb.Helper()
	lo, hi := map[[2]string]int64{}, map[[2]string]int64{}
	for _, o := range ops {
		k := [2]string{o.user, o.peer}
		switch o.outcome {
		case ok:
			lo[k] += o.amount
			hi[k] += o.amount
		case unknown:
			hi[k] += o.amount
		}
	}
	ctx := context.Background()
	pool, err := persist.Open(ctx, dbURL, 2)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `SELECT from_user, to_user, amount FROM transfer_totals`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	seen := map[[2]string]int64{}
	for rows.Next() {
		var f, to string
		var a int64
		if err := rows.Scan(&f, &to, &a); err != nil {
			tb.Fatal(err)
		}
		seen[[2]string{f, to}] = a
	}
	for k, a := range seen {
		if strings.HasPrefix(k[0], "p") && (a < lo[k] || a > hi[k]) {
			tb.Errorf("pair %s→%s: database total %d, possible %d…%d", k[0], k[1], a, lo[k], hi[k])
		}
	}
	for k, want := range lo {
		if want > 0 && seen[k] == 0 {
			tb.Errorf("pair %s→%s: acknowledged %d, database has none", k[0], k[1], want)
		}
	}
}

// mustLoopMount mounts a fresh ext4 image and returns its mount point,
// traversable by the postgres user; cleanup thaws, unmounts and removes it.
func mustLoopMount(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "merch-stall-")
	if err != nil {
		t.Fatal(err)
	}
	img, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "mnt")
	steps := [][]string{
		{"truncate", "-s", "512M", img},
		{"mkfs.ext4", "-q", "-F", img},
		{"mkdir", "-p", mnt},
		{"mount", "-o", "loop", img, mnt},
		{"chmod", "755", dir, mnt},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			_ = os.RemoveAll(dir)
			t.Fatalf("%v: %v: %s", s, err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("fsfreeze", "-u", mnt).Run()
		_ = exec.Command("umount", "-l", mnt).Run()
		_ = os.RemoveAll(dir)
	})
	return mnt
}

func fsfreeze(t *testing.T, flag, mnt string) {
	t.Helper()
	if out, err := exec.Command("fsfreeze", flag, mnt).CombinedOutput(); err != nil {
		t.Fatalf("fsfreeze %s: %v: %s", flag, err, out)
	}
}
