package dbha

// TestDBHA (make test-dbha): the service on a pg_auto_failover formation
// (monitor, primary, synchronous standby; formation_test.go), under keyed
// open-loop load, through one fault after another:
//
//   - primary hang: SIGSTOP of the primary's keeper and postmaster for
//     15 s, then SIGCONT (failover meanwhile; the old primary is rewound);
//     and of every process of it for a seeded 6–9 s, thawed near the
//     monitor's decision;
//   - primary death: kill -9 of its keeper, then an immediate stop;
//   - planned switchover: pg_autoctl perform failover;
//   - standby death: writes go on with one copy (the window is recorded);
//   - monitor down: writes go on;
//   - the service's link to the primary blackholed by a relay (no
//     failover: fast 503s, then writes resume by themselves).
//
// Every operation is recorded. The checks: every 2xx is on the final
// primary exactly once (and nothing refused is), the bank audit, memory
// matches the database, writes answered within REQUEST_TIMEOUT (+1 s) while
// there was no writable primary, reads of resident users answered
// throughout, the one-copy window visible in merch_db_synchronous_standby
// and /readyz (REQUIRE_SYNC_STANDBY), and the time from each fault to the
// first 2xx write.

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"merch/bench/harness"
	"merch/internal/relay"
)

func TestMain(m *testing.M) { harness.MainBinary(m) }

const (
	population     = 40
	opsPerSecond   = 300
	workers        = 16
	requestTimeout = time.Second // the service's REQUEST_TIMEOUT
	// answerBound: every write is answered within REQUEST_TIMEOUT plus
	// this machine's scheduling slack, whatever the database does.
	answerBound = requestTimeout + time.Second
	hangFor     = 15 * time.Second // the primary's SIGSTOP
	monitorDown = 5 * time.Second
	cutFor      = 6 * time.Second // the app↔primary blackhole
)

// op is one request of the load and what its client saw.
type op struct {
	user, key, peer, item string
	amount                int64
	buy, read             bool
	code                  int // first answer (0: none)
	final                 int // after keyed replays of an unknown outcome
	start, end            time.Time
}

func (o *op) send(c *harness.Client, token string) int {
	switch {
	case o.read:
		return c.Do("GET", "/api/info", token, "", nil).Code
	case o.buy:
		return c.Do("GET", "/api/buy/"+o.item, token, o.key, nil).Code
	}
	return c.Do("POST", "/api/sendCoin", token, o.key, map[string]any{"toUser": o.peer, "amount": o.amount}).Code
}

func acked(code int) bool   { return code >= 200 && code < 300 }
func refused(code int) bool { return code >= 400 && code < 500 && code != 409 }
func unknown(code int) bool { return !acked(code) && !refused(code) }

// load is open-loop keyed traffic: every op is recorded.
type load struct {
	mu    sync.Mutex
	ops   []*op
	seq   atomic.Int64
	stop  chan struct{}
	done  chan struct{}
	names []string
	toks  map[string]string
}

func startLoad(c *harness.Client, names []string, toks map[string]string, seed uint64) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{}), names: names, toks: toks}
	interval := time.Duration(workers) * time.Second / opsPerSecond
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
				case <-l.stop:
					return
				case <-t.C:
				}
				o := l.next(rng)
				o.start = time.Now()
				o.code = o.send(c, toks[o.user])
				o.end, o.final = time.Now(), o.code
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
	u := rng.IntN(len(l.names))
	o := &op{user: l.names[u], key: "k" + strconv.FormatInt(l.seq.Add(1), 10)}
	switch n := rng.IntN(100); {
	case n < 20:
		o.read, o.key = true, ""
	case n < 30:
		o.buy, o.item = true, []string{"pen", "socks", "cup"}[rng.IntN(3)]
	default:
		o.peer = l.names[(u+1+rng.IntN(len(l.names)-1))%len(l.names)]
		o.amount = int64(rng.IntN(5) + 1)
		if n < 33 {
			o.amount = 1 << 40 // refused (400): must never apply
		}
	}
	return o
}

func (l *load) snapshot() []*op {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*op(nil), l.ops...)
}

func (l *load) finish() []*op {
	close(l.stop)
	<-l.done
	return l.snapshot()
}

// firstWrite waits until a write that started after at was acknowledged
// and returns the time from at to its answer.
func (l *load) firstWrite(t *testing.T, at time.Time, within time.Duration) time.Duration {
	t.Helper()
	var d time.Duration
	if !harness.WaitUntil(within, func() bool {
		best := time.Duration(-1)
		for _, o := range l.snapshot() {
			if !o.read && acked(o.code) && o.start.After(at) && (best < 0 || o.end.Sub(at) < best) {
				best = o.end.Sub(at)
			}
		}
		d = best
		return best >= 0
	}) {
		t.Fatalf("no write acknowledged within %v of the fault", within)
	}
	return d
}

// sample is one look at the database and the service.
type sample struct {
	at          time.Time
	sync        string  // the primary's pg_stat_replication.sync_state and synchronous_standby_names
	synchronous float64 // merch_db_synchronous_standby (-1: no answer)
	ready       int     // /readyz (REQUIRE_SYNC_STANDBY is set)
}

type sampler struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

func startSampler(f *formation, srv *harness.Server) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := f.SyncState(ctx)
			cancel()
			if err != nil {
				st = "no primary"
			}
			smp := sample{at: time.Now(), sync: st, synchronous: gauge(srv, "merch_db_synchronous_standby"), ready: srv.Get("/readyz")}
			s.mu.Lock()
			s.samples = append(s.samples, smp)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) finish() []sample {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

func (s *sampler) last() sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return sample{synchronous: -1}
	}
	return s.samples[len(s.samples)-1]
}

var scrapeClient = &http.Client{Timeout: time.Second}

// gauge reads one unlabelled sample from the service's /metrics (-1: none).
func gauge(srv *harness.Server, name string) float64 {
	resp, err := scrapeClient.Get("http://" + srv.AdminAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// window is an interval during which the service reported one copy.
type window struct{ from, to time.Time }

// fault is one injected fault and what the test saw.
type fault struct {
	name       string
	at, until  time.Time // [at, until): the ops started in this window are the fault's
	firstWrite time.Duration
	note       string
	// maxGap, when set, bounds the longest time without a 2xx write.
	maxGap time.Duration
}

func TestDBHA(t *testing.T) {
	sd := harness.Seed(t, "DBHA_SEED", "./bench/dbha")
	began := time.Now()
	f := startFormation(t)
	t.Logf("formation up in %v: %s", time.Since(began).Round(time.Millisecond), mustSync(t, f))

	// The service reaches each node through a relay of its own (the
	// blackhole fault holds one), with the URL as an operator writes it:
	// every host, the read-write one chosen, no connect_timeout (the
	// service's multi-host default applies).
	var relays []*relay.Relay
	var hosts []string
	for _, n := range f.Nodes() {
		r, err := relay.Start(n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		relays, hosts = append(relays, r), append(hosts, r.Addr())
	}
	url := fmt.Sprintf("postgres://%s@%s/%s?target_session_attrs=read-write&sslmode=disable", osUser, strings.Join(hosts, ","), appDB)
	direct := f.URL(appDB, f.NodeAddrs()) // the checks' own, around the relays
	srv := harness.NewServer(t, url, "LOG_LEVEL=info", "REQUIRE_SYNC_STANDBY=true",
		"REQUEST_TIMEOUT="+requestTimeout.String(), "ACTOR_IDLE_TTL=10m")
	srv.Start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log (tail):\n%s", lastLines(srv.LogText(), 60))
		}
	})
	c := harness.NewClient(srv.Addr, 2*workers, 10*time.Second)
	names := make([]string, population)
	toks := map[string]string{}
	for i := range names {
		names[i] = fmt.Sprintf("u%02d", i)
		toks[names[i]] = c.Auth(t, names[i], "pw-"+names[i])
	}

	smp := startSampler(f, srv)
	l := startLoad(c, names, toks, sd)
	l.firstWrite(t, time.Now(), 10*time.Second) // warm

	ctx := context.Background()
	primary := func() *pgNode {
		t.Helper()
		p, err := f.Primary(ctx)
		if err != nil {
			t.Fatalf("primary: %v\n%s", err, f.eventsOrErr(20))
		}
		return p
	}
	var faults []*fault
	begin := func(name string) *fault {
		healthy(t, f, smp, time.Now())
		ft := &fault{name: name, at: time.Now()}
		if n := len(faults); n > 0 {
			faults[n-1].until = ft.at
		}
		faults = append(faults, ft)
		t.Logf("%s fault: %s", ft.at.Format("15:04:05.0"), name)
		return ft
	}

	// 1. Primary hang: its keeper and postmaster frozen 15 s (open sessions
	// go on; new connections and the monitor's checks hang). The standby
	// is promoted meanwhile; the old primary's commits that then wait for
	// it are never acknowledged; thawed, it is rewound and rejoins.
	ft := begin("primary hang (SIGSTOP keeper + postmaster 15 s)")
	p := primary()
	p.FreezeKeeper()
	promoted := f.WaitPrimary(t, f.Other(p), 40*time.Second)
	ft.firstWrite = promoted + l.firstWrite(t, ft.at.Add(promoted), 30*time.Second)
	waitUntilTime(ft.at.Add(hangFor))
	p.Thaw()
	ft.note = fmt.Sprintf("promoted after %v; rejoined, stable %v after the thaw", promoted.Round(time.Millisecond),
		f.WaitStable(t, 60*time.Second).Round(time.Millisecond))

	// 1b. The whole host hung (every PostgreSQL process too), thawed near
	// the monitor's decision (seeded 6–9 s; failover takes ~8 s): the old
	// primary may resume as primary, or be demoted while the service's
	// retries still reach it. Its commits that waited for the standby must
	// not be acknowledged from there.
	short := 6*time.Second + time.Duration(rand.New(rand.NewPCG(sd, 99)).Int64N(int64(3*time.Second)))
	ft = begin(fmt.Sprintf("primary host hang (SIGSTOP all %.1f s)", short.Seconds()))
	p = primary()
	p.Freeze()
	waitUntilTime(ft.at.Add(short))
	p.Thaw()
	ft.firstWrite = l.firstWrite(t, ft.at, 40*time.Second)
	stableAfter := f.WaitStable(t, 60*time.Second).Round(time.Millisecond)
	ft.note = fmt.Sprintf("failed over: %v; stable after %v", primary() != p, stableAfter)

	// 2. Primary death: keeper killed, PostgreSQL stopped at once.
	ft = begin("primary death (kill -9 keeper + immediate stop)")
	p = primary()
	p.KillKeeperAndStop()
	ft.at = time.Now() // PostgreSQL is down from here (the stop takes ~0.1 s)
	ft.firstWrite = l.firstWrite(t, ft.at, 40*time.Second)
	f.WaitPrimary(t, f.Other(p), 30*time.Second)
	p.Restart(t)
	ft.note = "rejoined, stable after " + f.WaitStable(t, 60*time.Second).Round(time.Millisecond).String()

	// 3. Planned switchover.
	ft = begin("planned switchover (perform failover)")
	p = primary()
	ft.maxGap = 5 * time.Second // less than one journal attempt
	if err := f.PerformFailover(ctx); err != nil {
		t.Fatalf("perform failover: %v\n%s", err, f.Tail(tailLines))
	}
	ft.firstWrite = l.firstWrite(t, ft.at, 40*time.Second)
	ft.note = "stable after " + f.WaitStable(t, 60*time.Second).Round(time.Millisecond).String()
	if primary() == p {
		t.Errorf("perform failover: %s is still the primary", p.Name)
	}

	// 4. Standby death: the primary goes wait_primary and acknowledges
	// with one copy; the service shows it (gauge 0, /readyz 503).
	ft = begin("standby death (kill -9)")
	s := f.Other(primary())
	s.Kill()
	ft.firstWrite = l.firstWrite(t, ft.at, 40*time.Second)
	lookAfter(t, smp, ft.at, 20*time.Second, "one copy (merch_db_synchronous_standby 0, /readyz 503)",
		func(x sample) bool { return x.synchronous == 0 && x.ready == 503 })
	restarted := time.Now()
	s.Restart(t)
	healthy(t, f, smp, restarted) // the window ends: gauge 1, /readyz 200
	ft.note = "standby back " + time.Since(restarted).Round(time.Millisecond).String() + " after its restart"

	// 5. Monitor down: no failover possible, writes go on.
	ft = begin("monitor down (5 s)")
	ft.maxGap = time.Second // the service does not notice
	f.StopMonitor()
	ft.firstWrite = l.firstWrite(t, ft.at, 20*time.Second)
	waitUntilTime(ft.at.Add(monitorDown))
	f.StartMonitor(t)
	f.WaitStable(t, 60*time.Second)

	// 6. The service's link to the primary blackholed: the monitor still
	// sees the primary (no failover), the other host is read-only, so the
	// service has no writable host: fast 503s, then it resumes by itself.
	ft = begin("app↔primary link blackholed (6 s)")
	p = primary()
	r := relays[nodeIndex(f, p)]
	r.Hold()
	for _, cn := range r.Conns() {
		cn.Hold()
	}
	waitUntilTime(ft.at.Add(cutFor))
	healed := time.Now()
	r.Release()
	for _, cn := range r.Conns() {
		cn.Release()
	}
	ft.firstWrite = l.firstWrite(t, ft.at, 40*time.Second)
	if q := primary(); q != p {
		t.Errorf("the blackhole between service and primary caused a failover (%s → %s)", p.Name, q.Name)
	}
	ft.note = "after the heal: " + l.firstWrite(t, healed, 30*time.Second).Round(time.Millisecond).String()

	ops := l.finish()
	samples := smp.finish()
	faults[len(faults)-1].until = time.Now()

	check(t, f, c, direct, names, toks, ops, faults, samples)
}

// waitUntilTime is a fault's duration (the fault lasts until then), not
// synchronisation.
func waitUntilTime(at time.Time) {
	if d := time.Until(at); d > 0 {
		time.Sleep(d)
	}
}

// healthy waits until the formation is stable and a look taken after
// since shows a synchronous standby streaming, the service reporting it
// (merch_db_synchronous_standby 1) and ready: the state every fault starts
// from.
func healthy(t *testing.T, f *formation, smp *sampler, since time.Time) {
	t.Helper()
	f.WaitStable(t, 60*time.Second)
	if !harness.WaitUntil(30*time.Second, func() bool {
		x := smp.last()
		return x.at.After(since) && strings.Contains(x.sync, "sync_state=quorum") && x.synchronous == 1 && x.ready == 200
	}) {
		t.Fatalf("not back to a synchronous standby: last sample %+v", smp.last())
	}
}

// lookAfter waits until a look taken after since satisfies cond.
func lookAfter(t *testing.T, smp *sampler, since time.Time, within time.Duration, what string, cond func(sample) bool) {
	t.Helper()
	if !harness.WaitUntil(within, func() bool { x := smp.last(); return x.at.After(since) && cond(x) }) {
		t.Fatalf("%s: not seen within %v; last sample %+v", what, within, smp.last())
	}
}

func nodeIndex(f *formation, n *pgNode) int {
	for i, m := range f.Nodes() {
		if m == n {
			return i
		}
	}
	panic("unknown node " + n.Name)
}

func mustSync(t *testing.T, f *formation) string {
	t.Helper()
	s, err := f.SyncState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func check(t *testing.T, f *formation, c *harness.Client, direct string, names []string, toks map[string]string,
	ops []*op, faults []*fault, samples []sample) {
	t.Helper()
	// Resolve every unknown outcome with its key.
	replays := 0
	deadline := time.Now().Add(60 * time.Second)
	for _, o := range ops {
		for !o.read && unknown(o.final) {
			if time.Now().After(deadline) {
				t.Fatalf("op %+v still unknown after 60 s of replays", o)
			}
			o.final = o.send(c, toks[o.user])
			replays++
		}
	}
	var keyed []harness.KeyedOp
	for _, o := range ops {
		if !o.read {
			keyed = append(keyed, harness.KeyedOp{User: o.user, Key: o.key, Acked: acked(o.final), Refused: refused(o.final), Op: *o})
		}
	}
	harness.CheckKeys(t, direct, names, keyed)
	harness.AuditDB(t, direct, len(names))
	harness.AuditMemoryMatchesDB(t, c, toks, direct)
	stored, _ := harness.DBKeys(t, direct, names)

	// Replication as sampled: the states seen and how long commits were
	// acknowledged with one copy (merch_db_synchronous_standby = 0).
	seen := map[string]int{}
	var oneCopy time.Duration
	var windows []window
	var from time.Time
	for i, s := range samples {
		seen[s.sync]++
		switch {
		case s.synchronous == 0 && from.IsZero():
			from = s.at
		case s.synchronous != 0 && !from.IsZero():
			oneCopy += s.at.Sub(from)
			windows = append(windows, window{from, s.at})
			from = time.Time{}
		}
		if i == len(samples)-1 && !from.IsZero() {
			oneCopy += s.at.Sub(from)
			windows = append(windows, window{from, s.at})
		}
	}
	var changes []string
	for i, x := range samples {
		if i == 0 || x.sync != samples[i-1].sync || x.synchronous != samples[i-1].synchronous || x.ready != samples[i-1].ready {
			changes = append(changes, fmt.Sprintf("%s %s gauge=%v readyz=%d", x.at.Format("15:04:05.0"), x.sync, x.synchronous, x.ready))
		}
	}
	t.Logf("replication as sampled (changes only):\n\t%s", strings.Join(changes, "\n\t"))
	var states []string
	for st, n := range seen {
		states = append(states, fmt.Sprintf("%s ×%d", st, n))
	}
	sort.Strings(states)
	t.Logf("sync_state samples: %s", strings.Join(states, "; "))
	// Per fault: outcomes of the ops started in its window, as first
	// answered, and how many acknowledged ones the final primary lacks.
	var total struct{ acked, unknown, refused, lost, reads, readFails, slow int }
	for _, ft := range faults {
		var a, u, rf, lost, rd, rdFail, slow int
		var slowest time.Duration
		acks := []time.Time{ft.at}
		for _, o := range ops {
			if o.start.Before(ft.at) || !o.start.Before(ft.until) {
				continue
			}
			if o.read {
				rd++
				if o.code != 200 {
					rdFail++
				}
				continue
			}
			lat := o.end.Sub(o.start)
			slowest = max(slowest, lat)
			if lat > answerBound {
				slow++
			}
			if acked(o.final) && !stored[o.user+"/"+o.key] {
				lost++ // acknowledged at once or on a keyed replay
			}
			switch {
			case acked(o.code):
				a++
				acks = append(acks, o.end)
			case refused(o.code):
				rf++
			default:
				u++
			}
		}
		sort.Slice(acks, func(i, j int) bool { return acks[i].Before(acks[j]) })
		var gap time.Duration
		for i := 1; i < len(acks); i++ {
			gap = max(gap, acks[i].Sub(acks[i-1]))
		}
		if ft.maxGap > 0 && gap > ft.maxGap {
			t.Errorf("%s: no write acknowledged for %v (bound %v)", ft.name, gap, ft.maxGap)
		}
		var single time.Duration
		for _, w := range windows {
			if !w.from.Before(ft.at) && w.from.Before(ft.until) {
				single += w.to.Sub(w.from)
			}
		}
		t.Logf("%-50s first 2xx write %6v, longest gap between 2xx writes %6v, one copy for %v | writes: acknowledged %5d, unknown %4d, refused %4d, lost %d | slowest answer %v | reads %d (failed %d) | %s",
			ft.name, ft.firstWrite.Round(time.Millisecond), gap.Round(time.Millisecond), single.Round(100*time.Millisecond),
			a, u, rf, lost, slowest.Round(time.Millisecond), rd, rdFail, ft.note)
		total.acked, total.unknown, total.refused, total.lost = total.acked+a, total.unknown+u, total.refused+rf, total.lost+lost
		total.reads, total.readFails, total.slow = total.reads+rd, total.readFails+rdFail, total.slow+slow
	}
	t.Logf("all faults: acknowledged %d, unknown %d (resolved by %d keyed replays), refused %d, lost %d; reads %d, failed %d; writes slower than %v: %d; one copy for %v in all",
		total.acked, total.unknown, replays, total.refused, total.lost, total.reads, total.readFails, answerBound, total.slow, oneCopy.Round(100*time.Millisecond))
	if total.lost > 0 {
		t.Errorf("%d acknowledged writes are not on the final primary", total.lost)
	}
	if total.slow > 0 {
		t.Errorf("%d writes took longer than %v to answer (REQUEST_TIMEOUT %v)", total.slow, answerBound, requestTimeout)
	}
	if total.readFails > 0 {
		t.Errorf("%d reads of resident users failed during the faults", total.readFails)
	}

	if len(windows) == 0 {
		t.Error("no one-copy window was seen, though the standby was killed")
	}
}
