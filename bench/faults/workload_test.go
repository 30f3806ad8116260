package faults

import (
	"merch/bench/harness"

	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type outcome uint8

const (
	unknown outcome = iota // no definite answer (timeout, refused, 5xx, 409)
	ok                     // 2xx: applied and durable
	fail                   // 4xx: refused, nothing applied
)

// op is one keyed change and what the client learned about it.
type op struct {
	user, key string
	buy       bool
	item      string
	peer      string
	amount    int64
	outcome   outcome
	code      int
}

func (o *op) send(c *harness.Client, tok string) harness.Result {
	if o.buy {
		return c.Do("GET", "/api/buy/"+o.item, tok, o.key, nil)
	}
	return c.Do("POST", "/api/sendCoin", tok, o.key, map[string]any{"toUser": o.peer, "amount": o.amount})
}

func classify(r harness.Result) outcome {
	switch {
	case r.Code >= 200 && r.Code < 300:
		return ok
	case r.Code == 409 || r.Code == 0 || r.Code >= 500:
		return unknown
	default:
		return fail
	}
}

var cheapItems = []string{"pen", "socks", "cup"}

// buyPercent of the random ops are buys. Buys drain money (transfers only
// move it), so long runs buy less to keep most operations succeeding.
var buyPercent = map[bool]int{false: 10, true: 1}[harness.Soak]

// population is a set of registered users with tokens.
type population struct {
	names  []string
	tokens map[string]string
}

func register(tb testing.TB, c *harness.Client, prefix string, n int) population {
	tb.Helper()
	p := population{tokens: map[string]string{}}
	for i := range n {
		name := fmt.Sprintf("%s%03d", prefix, i)
		p.names = append(p.names, name)
		p.tokens[name] = c.Auth(tb, name, "pw-"+name)
	}
	return p
}

// randomOp builds a keyed buy (1 in 10: buys drain money, transfers keep
// it moving) or transfer; pairs (2k, 2k+1) send to each other often, so
// opposite-direction transfers happen all the time.
func randomOp(rng *rand.Rand, p population, worker, seq int) *op {
	u := rng.IntN(len(p.names))
	o := &op{user: p.names[u], key: fmt.Sprintf("w%d-%d", worker, seq)}
	switch k := rng.IntN(100); {
	case k < buyPercent:
		o.buy, o.item = true, cheapItems[rng.IntN(len(cheapItems))]
	case k < 55:
		o.peer = p.names[u^1%len(p.names)]
		if u^1 >= len(p.names) {
			o.peer = p.names[(u+1)%len(p.names)]
		}
		o.amount = int64(rng.IntN(20) + 1)
	default:
		o.peer = p.names[(u+1+rng.IntN(len(p.names)-1))%len(p.names)]
		o.amount = int64(rng.IntN(50) + 1)
	}
	return o
}

// pauseLoad pauses the load generators: a fault schedule takes it to
// start a fault while no request is in flight (each op holds it shared).
var pauseLoad sync.RWMutex

// chaos runs workers doing random keyed ops until ctx ends; it returns
// every op with its outcome.
func chaos(ctx context.Context, c *harness.Client, p population, workers int) []*op {
	var mu sync.Mutex
	var all []*op
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			var mine []*op
			for seq := 0; ctx.Err() == nil; seq++ {
				o := randomOp(rng, p, w, seq)
				pauseLoad.RLock()
				r := o.send(c, p.tokens[o.user])
				pauseLoad.RUnlock()
				o.outcome, o.code = classify(r), r.Code
				mine = append(mine, o)
				if r.Code == 0 || r.Code == 503 {
					time.Sleep(5 * time.Millisecond) // server down or refusing writes: do not spin
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

// resolve retries every unknown op with its own key until it has a
// definite answer: a replay of an applied change answers 2xx, a change
// that never happened is evaluated afresh. It returns how many it resolved.
func resolve(tb testing.TB, c *harness.Client, p population, ops []*op) int {
	tb.Helper()
	var todo []*op
	for _, o := range ops {
		if o.outcome == unknown {
			todo = append(todo, o)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	var next atomic.Int64
	var stuck atomic.Pointer[op]
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(len(todo)); i = next.Add(1) - 1 {
				o := todo[i]
				for o.outcome == unknown {
					if time.Now().After(deadline) {
						stuck.Store(o)
						return
					}
					r := o.send(c, p.tokens[o.user])
					o.outcome, o.code = classify(r), r.Code
					if o.outcome == unknown {
						time.Sleep(20 * time.Millisecond) // the server is busy: back off
					}
				}
			}
		}()
	}
	wg.Wait()
	if o := stuck.Load(); o != nil {
		tb.Fatalf("op %+v still unknown after 60 s of retries", o)
	}
	return len(todo)
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

// checkKeys: harness.CheckKeys over the changes of the ops' users.
func checkKeys(tb testing.TB, dbURL string, ops []*op) {
	tb.Helper()
	users := map[string]bool{}
	keyed := make([]harness.KeyedOp, len(ops))
	for i, o := range ops {
		users[o.user] = true
		keyed[i] = harness.KeyedOp{User: o.user, Key: o.key, Acked: o.outcome == ok, Refused: o.outcome == fail, Op: o}
	}
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	harness.CheckKeys(tb, dbURL, names, keyed)
}

func isInsufficient(r harness.Result) bool {
	return r.Code == 400 && strings.Contains(string(r.Body), "insufficient")
}
