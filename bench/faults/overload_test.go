package faults

import (
	"merch/bench/harness"

	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rssCeiling is the resident memory the server may reach under this
// overload; without shedding, queues would grow without bound instead.
const rssCeiling = 300 << 20

// TestFaultOverload offers more than the service can take: a crowd on one
// user (per-user in-flight limit), a registration storm with real bcrypt
// cost (bounded hashing queue), next to normal clients. The service must
// shed with 503 (no other 5xx, no transport errors), admitted requests of
// the normal clients must keep their latency, and RSS must stay bounded.
func TestFaultOverload(t *testing.T) {
	dur := 3 * time.Second
	if harness.Soak {
		dur = 30 * time.Second
	}
	dbURL := harness.MustDatabase(t)
	// A small per-user limit, so the crowd exceeds it however slow the
	// client side is on a busy machine.
	srv := harness.NewServer(t, dbURL, "BCRYPT_COST=10", "INFLIGHT_PER_USER=8")
	srv.Start()
	c := harness.NewClient(srv.Addr, 1024, 10*time.Second)
	p := register(t, c, "n", 20)
	hot := p.names[0]

	normal := func(d time.Duration) (harness.Latencies, int) {
		var mu sync.Mutex
		var lat harness.Latencies
		var bad atomic.Int64
		stop := time.Now().Add(d)
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 3))
				var mine harness.Latencies
				for time.Now().Before(stop) {
					u := p.names[1+rng.IntN(len(p.names)-1)]
					var r harness.Result
					if rng.IntN(2) == 0 {
						r = c.Do("GET", "/api/info", p.tokens[u], "", nil)
					} else {
						to := p.names[1+rng.IntN(len(p.names)-1)]
						if to == u {
							continue
						}
						r = c.Do("POST", "/api/sendCoin", p.tokens[u], "", map[string]any{"toUser": to, "amount": 1})
					}
					switch {
					case r.Code == 200:
						mine = append(mine, r.Latency)
					case r.Code == 0 || (r.Code >= 500 && r.Code != 503):
						bad.Add(1)
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return lat, int(bad.Load())
	}

	base, bad := normal(dur / 2)
	if bad != 0 {
		t.Fatalf("baseline: %d errors", bad)
	}

	var hot503, auth503, hotOK, authOK, broken atomic.Int64
	var peak atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 128 { // the crowd on one user: 16 × its in-flight limit
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var r harness.Result
				if i%2 == 0 {
					r = c.Do("GET", "/api/info", p.tokens[hot], "", nil)
				} else {
					r = c.Do("POST", "/api/sendCoin", p.tokens[hot], "", map[string]any{"toUser": p.names[1+w%19], "amount": 1})
				}
				switch r.Code {
				case 200, 400:
					hotOK.Add(1)
				case 503:
					hot503.Add(1)
				default:
					if broken.Add(1) <= 3 {
						t.Logf("crowd: %d %s %v", r.Code, r.Body, r.Err)
					}
				}
			}
		}()
	}
	for w := range 64 { // the registration storm: bcrypt cost 10 takes ~15/s per core
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("storm%d_%d", w, i)
				r := c.Do("POST", "/api/auth", "", "", map[string]string{"username": name, "password": "pw"})
				switch r.Code {
				case 200:
					authOK.Add(1)
				case 503:
					auth503.Add(1)
				default:
					if broken.Add(1) <= 3 {
						t.Logf("storm: %d %s %v", r.Code, r.Body, r.Err)
					}
				}
			}
		}()
	}
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if rss, err := harness.RSSBytes(srv.PID()); err == nil && rss > peak.Load() {
					peak.Store(rss)
				}
			}
		}
	}()
	loaded, bad := normal(dur)
	close(stop)
	wg.Wait()

	if bad != 0 || broken.Load() != 0 {
		t.Errorf("errors other than 503: normal clients %d, crowd/storm %d", bad, broken.Load())
	}
	if hot503.Load() == 0 || auth503.Load() == 0 {
		t.Errorf("no shedding: hot user 503s %d, registration 503s %d", hot503.Load(), auth503.Load())
	}
	// Admitted requests never queue until their deadline (REQUEST_TIMEOUT,
	// 1 s): what they lose to the overload is CPU shared with the crowd on
	// this 2-core machine, not a growing queue.
	if p99 := loaded.Pct(.99); p99 > 500*time.Millisecond {
		t.Errorf("admitted requests of normal clients: p99 %v under overload (baseline %v)", p99, base.Pct(.99))
	}
	if peak.Load() > rssCeiling {
		t.Errorf("RSS peaked at %d MiB (ceiling %d MiB)", peak.Load()>>20, rssCeiling>>20)
	}
	t.Logf("overload %v: normal clients baseline %s; under overload %s; hot user %d answered, %d shed (503); registrations %d created, %d shed; peak RSS %d MiB",
		dur, base, loaded, hotOK.Load(), hot503.Load(), authOK.Load(), auth503.Load(), peak.Load()>>20)
}
