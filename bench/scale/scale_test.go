// Package scale benchmarks the real server binary with many users: start-up
// time with 100k users in the database, and memory and GC pauses with 100k
// users resident. Run: go test -run=NONE -bench=. -benchtime=1x ./bench/scale
package scale

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"merch/bench/harness"
	"merch/persist"
)

func TestMain(m *testing.M) { harness.Main(m) }

const users = 100_000

// mustPopulated returns a migrated database holding n users (inserted in
// one statement; their password hashes are placeholders: these users are
// reached with minted tokens, never by login).
func mustPopulated(tb testing.TB, n int) string {
	tb.Helper()
	url := harness.MustDatabase(tb)
	if _, err := persist.Migrate(context.Background(), url); err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	pool, err := persist.Open(ctx, url, 1)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `INSERT INTO users (name, password_hash, balance, shard)
SELECT 'u' || g, '\x00', 1000, merch_shard('u' || g) FROM generate_series(0, $1::int - 1) g`, n); err != nil {
		tb.Fatal(err)
	}
	return url
}

func token(tb testing.TB, user string) string {
	tb.Helper()
	t, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: user,
		IssuedAt: jwt.NewNumericDate(time.Now()), ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).
		SignedString([]byte(harness.JWTSecret))
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// BenchmarkStartup100kUsers: start to ready must not depend on how many
// users are in the database (users are loaded on first use).
func BenchmarkStartup100kUsers(b *testing.B) {
	url := mustPopulated(b, users)
	srv := harness.NewServer(b, url)
	var total time.Duration
	for range b.N {
		start := time.Now()
		srv.Start()
		total += time.Since(start)
		srv.Stop()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-ready")
}

// BenchmarkResident100kUsers activates 100k users (one /api/info each),
// then keeps reading for a few seconds so the GC runs with them all
// resident, and reports RSS and GC pauses.
func BenchmarkResident100kUsers(b *testing.B) {
	url := mustPopulated(b, users)
	// gctrace prints each cycle's two stop-the-world phases (wall clock):
	// exact pauses, where the runtime's histogram has coarse buckets.
	srv := harness.NewServer(b, url, "GODEBUG=gctrace=1")
	srv.Start()
	c := harness.NewClient(srv.Addr, 32, 10*time.Second)
	tokens := make([]string, users)
	for i := range tokens {
		tokens[i] = token(b, "u"+strconv.Itoa(i))
	}
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		var next atomic.Int64
		var failed atomic.Int64
		var wg sync.WaitGroup
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < users; i = next.Add(1) - 1 {
					if r := c.Do("GET", "/api/info", tokens[i], "", nil); r.Code != 200 {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if failed.Load() != 0 {
			b.Fatalf("%d activations failed", failed.Load())
		}
		b.ReportMetric(time.Since(start).Seconds(), "s-to-activate")
	}
	b.StopTimer()
	active := scrape(b, c, "merch_actor_active")
	if active < users {
		b.Fatalf("only %v actors resident", active)
	}
	// Reads over all users for 3 s: allocation keeps the GC cycling.
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(stop); i = (i + 7919) % users {
				c.Do("GET", "/api/info", tokens[i], "", nil)
			}
		}()
	}
	wg.Wait()
	rss, err := harness.RSSBytes(srv.PID())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(rss)/(1<<20), "RSS-MB")
	pauses := gcPauses(srv.LogText())
	if len(pauses) == 0 {
		b.Fatal("no GC cycle traced")
	}
	b.ReportMetric(float64(len(pauses)), "GC-pauses")
	b.ReportMetric(float64(pauses.Pct(.99).Microseconds())/1000, "GC-pause-p99-ms")
	b.ReportMetric(float64(pauses.Pct(1).Microseconds())/1000, "GC-pause-max-ms")
	b.ReportMetric(scrape(b, c, "go_memstats_heap_inuse_bytes")/(1<<20), "heap-MB")
	b.ReportMetric(active, "actors")
}

// scrape returns the value of one sample (exact name{labels}) of /metrics.
func scrape(tb testing.TB, c *harness.Client, sample string) float64 {
	tb.Helper()
	r := c.Do("GET", "/metrics", "", "", nil)
	if r.Code != 200 {
		tb.Fatalf("/metrics: %d", r.Code)
	}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, sample+" ") {
			v, err := strconv.ParseFloat(strings.TrimPrefix(line, sample+" "), 64)
			if err != nil {
				tb.Fatal(err)
			}
			return v
		}
	}
	tb.Fatalf("no sample %s", sample)
	return 0
}

// gcPauses parses gctrace lines ("gc 7 @1.2s 3%: 0.05+2.1+0.04 ms clock,
// ...") into stop-the-world pauses: the first and third clock terms.
func gcPauses(log string) harness.Latencies {
	var out harness.Latencies
	for _, line := range strings.Split(log, "\n") {
		if !strings.HasPrefix(line, "gc ") {
			continue
		}
		i := strings.Index(line, ": ")
		j := strings.Index(line, " ms clock")
		if i < 0 || j < i {
			continue
		}
		terms := strings.Split(line[i+2:j], "+")
		if len(terms) != 3 {
			continue
		}
		for _, k := range []int{0, 2} {
			var ms float64
			if _, err := fmt.Sscanf(terms[k], "%g", &ms); err == nil {
				out = append(out, time.Duration(ms*float64(time.Millisecond)))
			}
		}
	}
	return out
}
