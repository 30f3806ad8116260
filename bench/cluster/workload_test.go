package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"merch/actors"
	"merch/bench/harness"
	"merch/persist"
)

type outcome uint8

const (
	unknown outcome = iota // timeout, 5xx, 409: may or may not have applied
	ok                     // 2xx: applied, durable
	fail                   // 4xx: refused, nothing applied
)

// op is one keyed change and what the client learned.
type op struct {
	user, key, item, peer string
	amount                int64
	buy                   bool
	outcome               outcome
	code                  int
}

func classify(code int) outcome {
	switch {
	case code >= 200 && code < 300:
		return ok
	case code == 0 || code == 409 || code >= 500:
		return unknown
	}
	return fail
}

func (o *op) send(c *harness.Client, tok string) int { return o.do(c, tok).Code }

func (o *op) do(c *harness.Client, tok string) harness.Result {
	if o.buy {
		return c.Do("GET", "/api/buy/"+o.item, tok, o.key, nil)
	}
	return c.Do("POST", "/api/sendCoin", tok, o.key, map[string]any{"toUser": o.peer, "amount": o.amount})
}

// users is the population: names and tokens.
type users struct {
	names  []string
	tokens map[string]string
}

// register logs n users in through c (the edge).
func register(t *testing.T, c *harness.Client, prefix string, n int) users {
	t.Helper()
	u := users{tokens: map[string]string{}}
	for i := range n {
		name := fmt.Sprintf("%s%03d", prefix, i)
		u.names = append(u.names, name)
		u.tokens[name] = c.Auth(t, name, "pw-"+name)
	}
	return u
}

// load is open-loop keyed traffic over several targets: every op is
// recorded. rate is ops per second over all workers.
type load struct {
	mu      sync.Mutex
	ops     []*op
	seq     atomic.Int64
	targets []*harness.Client
	u       users
	stop    context.CancelFunc
	done    chan struct{}
}

func startLoad(u users, targets []*harness.Client, rate int, seed uint64) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{targets: targets, u: u, stop: cancel, done: make(chan struct{})}
	const workers = 16
	interval := time.Duration(workers) * time.Second / time.Duration(rate)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				o := l.next(rng)
				c := targets[rng.IntN(len(targets))]
				o.code = o.send(c, u.tokens[o.user])
				o.outcome = classify(o.code)
				l.mu.Lock()
				l.ops = append(l.ops, o)
				l.mu.Unlock()
			}
		}()
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

func (l *load) next(rng *rand.Rand) *op {
	n := l.u.names
	u := rng.IntN(len(n))
	o := &op{user: n[u], key: fmt.Sprintf("k%d", l.seq.Add(1))}
	if rng.IntN(100) < 5 {
		o.buy, o.item = true, []string{"pen", "socks", "cup"}[rng.IntN(3)]
		return o
	}
	o.peer = n[(u+1+rng.IntN(len(n)-1))%len(n)]
	o.amount = int64(rng.IntN(20) + 1)
	if rng.IntN(100) < 3 {
		o.amount = 1 << 40 // refused (400): must never apply
	}
	return o
}

// finish stops the load and returns every op.
func (l *load) finish() []*op {
	l.stop()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ops
}

// resolve retries unknown ops with their keys until definite.
func resolve(t *testing.T, c *harness.Client, u users, ops []*op) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, o := range ops {
		for o.outcome == unknown {
			if time.Now().After(deadline) {
				t.Fatalf("op %+v still unknown after 60 s", o)
			}
			o.code = o.send(c, u.tokens[o.user])
			o.outcome = classify(o.code)
			if o.outcome == unknown {
				time.Sleep(20 * time.Millisecond) // back off while the cluster settles
			}
		}
	}
}

type tally struct{ ok, fail, unknown int }

func count(ops []*op) tally {
	var t tally
	for _, o := range ops {
		switch o.outcome {
		case ok:
			t.ok++
		case fail:
			t.fail++
		default:
			t.unknown++
		}
	}
	return t
}

// checkKeys: harness.CheckKeys over everyone's changes.
func checkKeys(t *testing.T, dbURL string, ops []*op) {
	t.Helper()
	keyed := make([]harness.KeyedOp, len(ops))
	for i, o := range ops {
		keyed[i] = harness.KeyedOp{User: o.user, Key: o.key, Acked: o.outcome == ok, Refused: o.outcome == fail, Op: o}
	}
	harness.CheckKeys(t, dbURL, nil, keyed)
}

// checkEpochs: per shard, the writer epoch of ledger rows never decreases
// in commit (id) order — the fence's audit.
func checkEpochs(t *testing.T, dbURL string) {
	t.Helper()
	ctx := context.Background()
	pool, err := persist.Open(ctx, dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var bad string
	// Each ledger's identity is its commit order per shard (batches of one
	// shard never interleave: the fence).
	err = pool.QueryRow(ctx, `SELECT coalesce(string_agg(format('%s shard %s: epoch %s after %s', t, shard, epoch, prev), '; '), '') FROM (
  SELECT t, shard, epoch, lag(epoch) OVER (PARTITION BY t, shard ORDER BY id) AS prev FROM (
    SELECT 'transfers' AS t, id, shard, epoch FROM transfers
    UNION ALL SELECT 'purchases', id, shard, epoch FROM purchases) l) x
WHERE epoch < prev`).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != "" {
		t.Fatalf("writer epochs went backwards: %s", bad)
	}
}

// waitFolded waits until no pending credit is left (the cluster has
// quiesced), then runs the money audit.
func waitFolded(t *testing.T, dbURL string, n int) {
	t.Helper()
	ctx := context.Background()
	pool, err := persist.Open(ctx, dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var pending int64
	if !harness.WaitUntil(15*time.Second, func() bool {
		return pool.QueryRow(ctx, `SELECT count(*) FROM pending_credits`).Scan(&pending) == nil && pending == 0
	}) {
		t.Errorf("%d pending credits never folded", pending)
	}
	harness.AuditDB(t, dbURL, n)
}

// sampler checks, every 50 ms while the test runs, that no user is live on
// two nodes under the same epoch, and the bank invariant in one snapshot.
type sampler struct {
	stop     chan struct{}
	done     chan struct{}
	samples  atomic.Int64
	audits   atomic.Int64
	mu       sync.Mutex
	problems []string
}

func startSampler(r *rig, dbURL string, users int) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	ctx := context.Background()
	pool, _ := persist.Open(ctx, dbURL, 2)
	go func() {
		defer close(s.done)
		if pool != nil {
			defer pool.Close()
		}
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			for user, byNode := range r.residents() {
				seen := map[uint64]string{}
				for n, e := range byNode {
					if other, dup := seen[e]; dup {
						s.problem(fmt.Sprintf("%s live on %s and %s at epoch %d", user, other, n, e))
					}
					seen[e] = n
				}
			}
			s.samples.Add(1)
			if pool != nil && i%20 == 0 {
				if rep, err := persist.Audit(ctx, pool); err == nil {
					s.audits.Add(1)
					if !rep.OK() || rep.Users != int64(users) {
						s.problem("audit: " + rep.String())
					}
				}
			}
		}
	}()
	return s
}

func (s *sampler) problem(p string) {
	s.mu.Lock()
	if len(s.problems) < 20 {
		s.problems = append(s.problems, p)
	}
	s.mu.Unlock()
}

func (s *sampler) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	<-s.done
	for _, p := range s.problems {
		t.Error(p)
	}
}

// ownerOf returns the node owning name's shard per a node's routing map.
func ownerOf(r *rig, name string) string {
	snap := r.ownersSnapshot()
	want := fmt.Sprintf("%d ", actors.ShardOf(name))
	for _, line := range splitLines(string(snap)) {
		if len(line) > len(want) && line[:len(want)] == want {
			return line[len(want):]
		}
	}
	return ""
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := range len(s) {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}
