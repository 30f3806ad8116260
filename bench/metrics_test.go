package bench

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/valyala/fasthttp"

	"merch/actors"
	"merch/actors/actorstest"
	"merch/api"
	"merch/metrics"
)

// newService builds actors + api in process, with or without metrics, over
// an in-memory store and a journal that commits in batches like the real
// one without the database: the benchmark measures the service, not
// PostgreSQL. Users are put in the store by the caller.
func newService(tb testing.TB, withMetrics bool) (fasthttp.RequestHandler, *api.Tokens, *actorstest.Store) {
	tb.Helper()
	engine, err := actor.NewEngine(actor.NewEngineConfig())
	if err != nil {
		tb.Fatal(err)
	}
	var am actors.Metrics = actors.NopMetrics{}
	cfg := api.Config{}
	if withMetrics {
		cfg.Registry = metrics.NewRegistry()
		am = metrics.NewActors(cfg.Registry)
	}
	store := actorstest.MustStore(tb)
	sys, err := actors.NewSystem(actors.Config{Engine: engine, Journal: actorstest.MustJournal(tb, store, 4096), Store: store,
		Metrics: am, InboxSize: 8, InflightPerUserMax: 64, IdleTTL: time.Hour, SweepInterval: time.Second,
		LoadTimeout: time.Second, WriteTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(sys.Close)
	tokens, err := api.NewTokens([]byte("bench-secret-0123456789"), time.Hour, 1000)
	if err != nil {
		tb.Fatal(err)
	}
	hasher, err := api.NewHasher(4, 1, 8, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(hasher.Close)
	limiter, err := api.NewLimiter(api.LimiterConfig{FailuresMax: 10, NameFailuresMax: 100, Window: time.Minute, NamesMax: 100})
	if err != nil {
		tb.Fatal(err)
	}
	cfg.System, cfg.Tokens, cfg.Hasher, cfg.Limiter = sys, tokens, hasher, limiter
	srv, err := api.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return srv.Handler(), tokens, store
}

// BenchmarkMetricsOverhead serves the same mix (info, and transfers back
// and forth within a pair, through the handler and the real actors) with
// and without Prometheus metrics. Compare the two ns/op of one run:
//
//	go test -run=NONE -bench=MetricsOverhead -count=6 ./bench | benchstat -col /metrics -
func BenchmarkMetricsOverhead(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run("metrics="+map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			h, tokens, store := newService(b, on)
			var pairs atomic.Int64
			var mu sync.Mutex
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				p := strconv.FormatInt(pairs.Add(1), 10)
				names := [2]string{"a" + p, "b" + p}
				mu.Lock()
				var toks [2]string
				for i, n := range names {
					store.Put(n, actors.UserState{Coins: actors.StartingCoins, PasswordHash: []byte("x")})
					t, err := tokens.Issue(n)
					if err != nil {
						b.Error(err)
					}
					toks[i] = "Bearer " + t
				}
				mu.Unlock()
				var ctx fasthttp.RequestCtx
				for i := 0; pb.Next(); i++ {
					me := i / 2 % 2
					ctx.Request.Reset()
					ctx.Response.Reset()
					ctx.Request.Header.Set("Authorization", toks[me])
					if i%2 == 0 {
						ctx.Request.Header.SetMethod("GET")
						ctx.Request.SetRequestURI("/api/info")
					} else {
						ctx.Request.Header.SetMethod("POST")
						ctx.Request.SetRequestURI("/api/sendCoin")
						ctx.Request.SetBodyString(`{"toUser":"` + names[1-me] + `","amount":1}`)
					}
					h(&ctx)
					if c := ctx.Response.StatusCode(); c != 200 {
						b.Fatalf("status %d: %s", c, ctx.Response.Body())
					}
				}
			})
		})
	}
}
