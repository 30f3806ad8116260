package bench

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/valyala/fasthttp"

	"merch/actors"
	"merch/api"
	"merch/metrics"
)

// memJournal completes records from one goroutine, in order, like the real
// journal without the database: the benchmark measures the service, not
// PostgreSQL.
type memJournal struct{ q chan actors.Record }

func newMemJournal(tb testing.TB) *memJournal {
	j := &memJournal{q: make(chan actors.Record, 4096)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range j.q {
			r.Done.JournalDone(nil)
		}
	}()
	tb.Cleanup(func() { close(j.q); <-done })
	return j
}

func (j *memJournal) Append(r *actors.Record) error {
	select {
	case j.q <- *r:
		return nil
	default:
		return actors.ErrOverloaded
	}
}

// memStore knows every user as new (1000 coins).
type memStore struct{}

func (memStore) LoadUser(context.Context, string) (actors.UserState, error) {
	return actors.UserState{Coins: actors.StartingCoins, PasswordHash: []byte("x")}, nil
}

func (memStore) KeyApplied(context.Context, string, string) (actors.KeyedRequest, bool, error) {
	return actors.KeyedRequest{}, false, nil
}

// newService builds actors + api in process, with or without metrics.
func newService(tb testing.TB, withMetrics bool) (fasthttp.RequestHandler, *api.Tokens) {
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
	sys, err := actors.NewSystem(actors.Config{Engine: engine, Journal: newMemJournal(tb), Store: memStore{},
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
	return srv.Handler(), tokens
}

// BenchmarkMetricsOverhead serves the same mix (info, and transfers back
// and forth within a pair, through the handler and the real actors) with
// and without Prometheus metrics. Compare the two ns/op of one run:
//
//	go test -run=NONE -bench=MetricsOverhead -count=6 ./bench | benchstat -col /metrics -
func BenchmarkMetricsOverhead(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run("metrics="+map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			h, tokens := newService(b, on)
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
