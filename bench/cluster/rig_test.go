package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
	"merch/bench/harness"
	"merch/cluster"
	"merch/internal/relay"
	"merch/persist"
)

// ttl is the test lease TTL (renewals every ttl/3).
const ttl = time.Second

// rig is a cluster on loopback: real node binaries on one PostgreSQL,
// each node's database link through its own relay, each node's internal
// listener behind an inbound relay (what its peers dial), and HAProxy in
// front.
type rig struct {
	t      *testing.T
	dbURL  string
	target string // PostgreSQL's host:port
	mu     sync.Mutex
	nodes  map[string]*node
	edge   *edge
	slots  []*slot // node names and addresses HAProxy knows, used or free
	edgeAt string  // HAProxy's address, the same across its restarts
}

// slot is a node's fixed identity: name and addresses, reused when a
// node leaves and another joins (HAProxy's servers are fixed, as in a
// deployment).
type slot struct {
	id, http, admin, bind string
	used                  bool
}

// slotsMax bounds the nodes a test runs at once (3, one joining, one more
// in the frozen-map step).
const slotsMax = 6

type node struct {
	id      string
	srv     *harness.Server
	db      *relay.Relay // node → PostgreSQL
	in      *relay.Relay // peers → node's internal listener
	stopped bool         // SIGSTOPped
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{t: t, dbURL: harness.MustDatabase(t), target: "127.0.0.1:" + strconv.Itoa(harness.Cluster.Port()),
		nodes: map[string]*node{}}
	for i := range slotsMax {
		r.slots = append(r.slots, &slot{id: fmt.Sprintf("n%d", i+1), http: freePort(t), admin: freePort(t), bind: freePort(t)})
	}
	return r
}

// join starts a node in the first free slot and returns its ID.
func (r *rig) join() string {
	r.t.Helper()
	for _, s := range r.slots {
		if !s.used {
			r.add(s.id)
			return s.id
		}
	}
	r.t.Fatal("no free node slot")
	return ""
}

func (r *rig) slot(id string) *slot {
	for _, s := range r.slots {
		if s.id == id {
			return s
		}
	}
	r.t.Fatalf("no slot %s", id)
	return nil
}

func mustRelay(t *testing.T, target string) *relay.Relay {
	t.Helper()
	r, err := relay.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// add starts node id and waits until it is ready.
func (r *rig) add(id string) *node {
	r.t.Helper()
	sl := r.slot(id)
	sl.used = true
	n := &node{id: id, db: mustRelay(r.t, r.target), in: mustRelay(r.t, sl.bind)}
	url := strings.Replace(r.dbURL, r.target, n.db.Addr(), 1)
	n.srv = harness.NewServer(r.t, url, "NODE_ID="+id, "INTERNAL_ADDR="+n.in.Addr(), "INTERNAL_BIND="+sl.bind,
		"SHARD_LEASE_TTL="+ttl.String(), "MAX_CONNS_PER_IP=0", "GOMAXPROCS=1", "LOG_LEVEL=info",
		"HTTP_ADDR="+sl.http, "ADMIN_ADDR="+sl.admin)
	n.srv.Addr, n.srv.AdminAddr = sl.http, sl.admin
	n.srv.Start()
	r.mu.Lock()
	r.nodes[id] = n
	r.mu.Unlock()
	return n
}

func (r *rig) node(id string) *node {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nodes[id]
}

func (r *rig) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id := range r.nodes {
		out = append(out, id)
	}
	return sortStrings(out)
}

// running returns the nodes that are up and not stopped.
func (r *rig) running() []*node {
	var out []*node
	for _, id := range r.ids() {
		if n := r.node(id); n.srv.Alive() && !n.stopped {
			out = append(out, n)
		}
	}
	return out
}

// remove stops node id gracefully (its shards are handed off) and forgets
// it.
func (r *rig) remove(id string) {
	n := r.node(id)
	n.srv.Stop()
	r.mu.Lock()
	delete(r.nodes, id)
	r.mu.Unlock()
	r.slot(id).used = false
}

// scrape returns the sum over nodes of one metric family's samples.
func (r *rig) scrape(family string) float64 {
	total := 0.0
	for _, id := range r.ids() {
		n := r.node(id)
		if !n.srv.Alive() || n.stopped {
			continue
		}
		resp, err := http.Get("http://" + n.srv.AdminAddr + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, family+" ") || strings.HasPrefix(line, family+"{") {
				if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
					total += v
				}
			}
		}
		_ = resp.Body.Close()
	}
	return total
}

// owned returns how many shards each running node holds.
func (r *rig) owned() map[string]float64 {
	out := map[string]float64{}
	for _, n := range r.running() {
		out[n.id] = r.scrapeNode(n, "merch_cluster_shards_owned")
	}
	return out
}

func (r *rig) scrapeNode(n *node, family string) float64 {
	resp, err := http.Get("http://" + n.srv.AdminAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	// family may name one series (`name{label="v"}`) or all of a name's.
	sc := bufio.NewScanner(resp.Body)
	sum, found := 0.0, false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, family+" ") || (!strings.Contains(family, "{") && strings.HasPrefix(line, family+"{")) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// waitBalanced waits until the cluster has settled: the running nodes hold
// all 256 shards between them, each some, and every shard's live lease in
// the database is held by the node placement puts it on (no handoff is
// left to do, so nothing is refused while it moves).
func (r *rig) waitBalanced(d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	pool, err := persist.Open(ctx, r.dbURL, 1)
	if err != nil {
		return false
	}
	defer pool.Close()
	return harness.WaitUntil(d, func() bool {
		total, each := 0.0, true
		for _, v := range r.owned() {
			total += v
			each = each && v > 0
		}
		return total == 256 && each && r.placed(ctx, pool)
	})
}

// explain describes where user's shard is: the database's lease, the
// nodes table and each running node's view (for failure messages).
func (r *rig) explain(user string) string {
	sh := actors.ShardOf(user)
	var b strings.Builder
	fmt.Fprintf(&b, "shard %d of %s, placed on %s\n", sh, user, func() string {
		var live []string
		for _, n := range r.running() {
			live = append(live, n.id)
		}
		return cluster.Target(sh, live)
	}())
	ctx := context.Background()
	if pool, err := persist.Open(ctx, r.dbURL, 1); err == nil {
		var row string
		_ = pool.QueryRow(ctx, `SELECT format('lease: %s inc %s epoch %s expires %s (now %s)', node_id, incarnation, epoch, expires_at, now()) FROM shard_owner WHERE shard = $1`, int16(sh)).Scan(&row)
		fmt.Fprintln(&b, row)
		rows, _ := pool.Query(ctx, `SELECT format('node %s inc %s at %s beat %s', node_id, incarnation, internal_addr, heartbeat_at) FROM nodes ORDER BY node_id`)
		for rows != nil && rows.Next() {
			_ = rows.Scan(&row)
			fmt.Fprintln(&b, row)
		}
		pool.Close()
	}
	want := fmt.Sprintf("%d ", sh)
	for _, n := range r.running() {
		resp, err := http.Get("http://" + n.in.Addr() + "/internal/owners")
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", n.id, err)
			continue
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		_ = resp.Body.Close()
		line := "(none)"
		for _, l := range strings.Split(body.String(), "\n") {
			if strings.HasPrefix(l, want) {
				line = l
			}
		}
		fwd := ""
		for _, res := range []string{"answered", "misdirected", "not_sent", "failed", "no_owner"} {
			fwd += fmt.Sprintf(" %s=%v", res, r.scrapeNode(n, `merch_cluster_forwards_total{result="`+res+`"}`))
		}
		fmt.Fprintf(&b, "%s (owns %v; forwards%s) sees: %s\n", n.id, r.scrapeNode(n, "merch_cluster_shards_owned"), fwd, line)
	}
	if os.Getenv("CLUSTER_LOGS") != "" {
		for _, n := range r.running() {
			fmt.Fprintf(&b, "--- %s log:\n%s\n", n.id, n.srv.LogText())
		}
	}
	return b.String()
}

// placed reports whether every shard is leased (live, database clock) to
// its placement target among the running nodes.
func (r *rig) placed(ctx context.Context, pool *pgxpool.Pool) bool {
	var live []string
	for _, n := range r.running() {
		live = append(live, n.id)
	}
	rows, err := pool.Query(ctx, `SELECT shard, node_id FROM shard_owner WHERE expires_at > now()`)
	if err != nil {
		return false
	}
	owner := map[actors.Shard]string{}
	for rows.Next() {
		var s int16
		var n string
		if rows.Scan(&s, &n) != nil {
			return false
		}
		owner[actors.Shard(s)] = n
	}
	if rows.Err() != nil {
		return false
	}
	for s := range actors.ShardCount {
		if owner[actors.Shard(s)] != cluster.Target(actors.Shard(s), live) {
			return false
		}
	}
	return true
}

// residents samples /debug/actors on every running node: user → node →
// epoch.
func (r *rig) residents() map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for _, n := range r.running() {
		resp, err := http.Get("http://" + n.srv.AdminAddr + "/debug/actors")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 {
				continue
			}
			e, _ := strconv.ParseUint(f[2], 10, 64)
			if out[f[0]] == nil {
				out[f[0]] = map[string]uint64{}
			}
			out[f[0]][n.id] = e
		}
		_ = resp.Body.Close()
	}
	return out
}

// edge is HAProxy in front of the nodes, configured from
// deploy/haproxy/haproxy.cfg with loopback addresses.
type edge struct {
	addr string
	cmd  *exec.Cmd
	dir  string
	log  *bytes.Buffer
}

// startEdge starts HAProxy routing to the rig's nodes (frozen: without the
// owners poll, the map stays as it was at start).
func (r *rig) startEdge(frozen bool) *edge {
	r.t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		r.t.Fatal("the cluster tests need haproxy (Debian package haproxy; .ci/run installs it)")
	}
	dir := r.t.TempDir()
	if r.edgeAt == "" {
		r.edgeAt = freePort(r.t)
	}
	if r.edge != nil { // one HAProxy at a time
		_ = r.edge.cmd.Process.Kill()
		_ = r.edge.cmd.Wait()
	}
	e := &edge{addr: r.edgeAt, dir: dir}
	cfg := r.haproxyConfig(dir, e.addr, frozen)
	if err := os.WriteFile(filepath.Join(dir, "haproxy.cfg"), []byte(cfg), 0o644); err != nil {
		r.t.Fatal(err)
	}
	lua, err := os.ReadFile("../../deploy/haproxy/owners.lua")
	if err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owners.lua"), lua, 0o644); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owners.map"), r.ownersSnapshot(), 0o644); err != nil {
		r.t.Fatal(err)
	}
	e.cmd, e.log = startHAProxy(r.t, filepath.Join(dir, "haproxy.cfg"), e.addr)
	r.edge = e
	r.waitChecks(filepath.Join(dir, "admin.sock"))
	return e
}

// waitChecks waits until HAProxy's health checks agree with the slots:
// servers of running nodes up, the others down (before, a request pinned
// to a dead slot could exhaust its retries on other dead slots).
func (r *rig) waitChecks(sock string) {
	r.t.Helper()
	want := map[string]string{}
	for _, sl := range r.slots {
		want[sl.id] = "0"
		if n := r.node(sl.id); n != nil && n.srv.Alive() && !n.stopped {
			want[sl.id] = "2"
		}
	}
	if !harness.WaitUntil(10*time.Second, func() bool {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false
		}
		defer c.Close()
		_, _ = c.Write([]byte("show servers state nodes\n"))
		got := map[string]string{}
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) > 5 && f[1] == "nodes" {
				got[f[3]] = f[5] // srv_name, srv_op_state
			}
		}
		for id, st := range want {
			if got[id] != st {
				return false
			}
		}
		return true
	}) {
		r.t.Fatalf("haproxy's health checks never matched the nodes")
	}
}

// startHAProxy runs haproxy on cfg and waits until addr accepts
// connections; it is killed at cleanup.
func startHAProxy(t *testing.T, cfg, addr string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	log := new(bytes.Buffer)
	cmd := exec.Command("haproxy", "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if !harness.WaitUntil(10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("haproxy did not start:\n%s", log)
	}
	return cmd, log
}

// ownersSnapshot is a node's /internal/owners now.
func (r *rig) ownersSnapshot() []byte {
	for _, n := range r.running() {
		resp, err := http.Get("http://" + n.in.Addr() + "/internal/owners")
		if err != nil {
			continue
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		_ = resp.Body.Close()
		return b.Bytes()
	}
	return nil
}

var serverLine = regexp.MustCompile(`(?m)^\s*server .*\n`)

// haproxyConfig rewrites the deployed configuration for loopback: paths
// into dir, the bind address, the nodes' addresses (servers are named
// after NODE_ID, health checks on their admin port).
func (r *rig) haproxyConfig(dir, bind string, frozen bool) string {
	b, err := os.ReadFile("../../deploy/haproxy/haproxy.cfg")
	if err != nil {
		r.t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(b), "/usr/local/etc/haproxy/", dir+"/")
	cfg = strings.Replace(cfg, "bind :8080", "bind "+bind, 1)
	cfg = strings.Replace(cfg, "log stdout format raw local0 info",
		"log stderr format raw local0 warning\n    stats socket "+dir+"/admin.sock level admin", 1)
	var internal []string
	var servers strings.Builder
	for _, id := range r.ids() {
		internal = append(internal, r.node(id).in.Addr())
	}
	for _, sl := range r.slots { // every slot, used or not: the servers are fixed
		_, adminPort, _ := net.SplitHostPort(sl.admin)
		fmt.Fprintf(&servers, "    server %s %s check port %s inter 200ms fall 2\n", sl.id, sl.http, adminPort)
	}
	cfg = regexp.MustCompile(`setenv MERCH_NODES ".*"`).ReplaceAllString(cfg, `setenv MERCH_NODES "`+strings.Join(internal, " ")+`"`)
	cfg = serverLine.ReplaceAllString(cfg, "")
	cfg = strings.TrimRight(cfg, "\n") + "\n" + servers.String()
	if frozen {
		cfg = regexp.MustCompile(`(?m)^\s*lua-load .*\n`).ReplaceAllString(cfg, "")
	}
	return cfg
}

// pgRestart restarts PostgreSQL (fast shutdown) under the nodes.
func pgRestart(t *testing.T) {
	t.Helper()
	if err := harness.Cluster.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	if err := harness.Cluster.Start(); err != nil {
		t.Fatal(err)
	}
}

func sortStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}
