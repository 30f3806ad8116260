package main

import (
	"context"
	"encoding/json"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// fakeAPI is a minimal in-memory merch store: enough of the API contract
// for the generator to run against, plus counters the tests compare with
// the generator's report. It deliberately has no testing dependency.
type fakeAPI struct {
	startCoins int
	delay      time.Duration // simulated processing time of every request
	hold       chan struct{} // if non-nil, non-auth requests block until it is closed
	firstLoad  chan struct{} // closed when the first non-auth request arrives
	firstOnce  sync.Once
	failEvery  int // if > 0, every failEvery-th non-auth request gets a 503

	inflight atomic.Int64 // non-auth requests being handled

	mu           sync.Mutex
	users        map[string]*fakeUser
	served       map[string]int // responses per endpoint (auth/info/buy/send)
	insufficient int            // 400 insufficient-funds responses sent
	keyed        map[string]int // requests per endpoint that carried an Idempotency-Key
	keys         map[string]int // times each Idempotency-Key was seen
	badKeys      []string       // keys outside the service's 1-64 printable ASCII
	loads        int            // non-auth requests
	failed       int            // 503s sent for failEvery
	arrivals     []fakeArrival  // every non-auth request: when, and how many were in flight
}

// fakeArrival is one non-auth request as the server saw it.
type fakeArrival struct {
	at       time.Time
	inflight int64 // including this one
}

type fakeUser struct {
	password  string
	coins     int
	inventory map[string]int
	received  []fakeTransfer
	sent      []fakeTransfer
}

type fakeTransfer struct {
	user   string
	amount int
}

var (
	fakePrices = map[string]int{
		"t-shirt": 80, "cup": 20, "book": 50, "pen": 10, "powerbank": 200,
		"hoody": 300, "umbrella": 200, "socks": 10, "wallet": 50, "pink-hoody": 500,
	}
	fakeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	fakeKeyRE  = regexp.MustCompile(`^[\x21-\x7e]{1,64}$`) // the service's Idempotency-Key rule
)

func newFakeAPI(startCoins int) *fakeAPI {
	return &fakeAPI{
		startCoins: startCoins, users: map[string]*fakeUser{}, served: map[string]int{},
		keyed: map[string]int{}, keys: map[string]int{}, firstLoad: make(chan struct{}),
	}
}

func (f *fakeAPI) handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	if path != "/api/auth" {
		n := f.inflight.Add(1)
		defer f.inflight.Add(-1)
		f.mu.Lock()
		f.arrivals = append(f.arrivals, fakeArrival{at: time.Now(), inflight: n})
		f.loads++
		fail := f.failEvery > 0 && f.loads%f.failEvery == 0
		f.mu.Unlock()
		f.firstOnce.Do(func() { close(f.firstLoad) })
		if f.hold != nil {
			<-f.hold
		}
		if fail {
			f.mu.Lock()
			f.failed++
			f.mu.Unlock()
			fakeError(ctx, fasthttp.StatusServiceUnavailable, "overloaded")
			return
		}
	}
	if f.delay > 0 {
		time.Sleep(f.delay) // simulated service time, not synchronisation
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noteKey(ctx, path)
	switch {
	case path == "/api/auth" && ctx.IsPost():
		f.served["auth"]++
		f.auth(ctx)
	case path == "/api/info" && ctx.IsGet():
		f.served["info"]++
		f.info(ctx)
	case path == "/api/sendCoin" && ctx.IsPost():
		f.served["send"]++
		f.send(ctx)
	case strings.HasPrefix(path, "/api/buy/") && ctx.IsGet():
		f.served["buy"]++
		f.buy(ctx, strings.TrimPrefix(path, "/api/buy/"))
	default:
		fakeError(ctx, fasthttp.StatusNotFound, "not found")
	}
}

// noteKey records the request's Idempotency-Key, if any (f.mu held).
func (f *fakeAPI) noteKey(ctx *fasthttp.RequestCtx, path string) {
	k := string(ctx.Request.Header.Peek("Idempotency-Key"))
	if k == "" {
		return
	}
	ep := strings.TrimPrefix(path, "/api/")
	switch {
	case strings.HasPrefix(ep, "buy/"):
		ep = "buy"
	case ep == "sendCoin":
		ep = "send"
	}
	f.keyed[ep]++
	f.keys[k]++
	if !fakeKeyRE.MatchString(k) {
		f.badKeys = append(f.badKeys, k)
	}
}

func fakeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(map[string]string{"errors": msg})
	ctx.SetBody(b)
}

func (f *fakeAPI) auth(ctx *fasthttp.RequestCtx) {
	v, err := fastjson.ParseBytes(ctx.PostBody())
	name, pass := string(v.GetStringBytes("username")), string(v.GetStringBytes("password"))
	if err != nil || !fakeNameRE.MatchString(name) || pass == "" || len(pass) > 72 {
		fakeError(ctx, fasthttp.StatusBadRequest, "bad credentials format")
		return
	}
	u, ok := f.users[name]
	if !ok {
		u = &fakeUser{password: pass, coins: f.startCoins, inventory: map[string]int{}}
		f.users[name] = u
	}
	if u.password != pass {
		fakeError(ctx, fasthttp.StatusUnauthorized, "wrong password")
		return
	}
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(map[string]string{"token": "tok." + name})
	ctx.SetBody(b)
}

// user resolves the bearer token; it answers 401 itself when invalid.
func (f *fakeAPI) user(ctx *fasthttp.RequestCtx) (string, *fakeUser) {
	name, ok := strings.CutPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer tok.")
	if u := f.users[name]; ok && u != nil {
		return name, u
	}
	fakeError(ctx, fasthttp.StatusUnauthorized, "bad token")
	return "", nil
}

func (f *fakeAPI) info(ctx *fasthttp.RequestCtx) {
	_, u := f.user(ctx)
	if u == nil {
		return
	}
	type item struct {
		Type     string `json:"type"`
		Quantity int    `json:"quantity"`
	}
	type recv struct {
		FromUser string `json:"fromUser"`
		Amount   int    `json:"amount"`
	}
	type sent struct {
		ToUser string `json:"toUser"`
		Amount int    `json:"amount"`
	}
	var out struct {
		Coins       int    `json:"coins"`
		Inventory   []item `json:"inventory"`
		CoinHistory struct {
			Received []recv `json:"received"`
			Sent     []sent `json:"sent"`
		} `json:"coinHistory"`
	}
	out.Coins = u.coins
	out.Inventory, out.CoinHistory.Received, out.CoinHistory.Sent = []item{}, []recv{}, []sent{}
	for t, q := range u.inventory {
		out.Inventory = append(out.Inventory, item{t, q})
	}
	sort.Slice(out.Inventory, func(i, j int) bool { return out.Inventory[i].Type < out.Inventory[j].Type })
	for _, r := range u.received {
		out.CoinHistory.Received = append(out.CoinHistory.Received, recv{r.user, r.amount})
	}
	for _, s := range u.sent {
		out.CoinHistory.Sent = append(out.CoinHistory.Sent, sent{s.user, s.amount})
	}
	b, _ := json.Marshal(out)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func (f *fakeAPI) buy(ctx *fasthttp.RequestCtx, item string) {
	_, u := f.user(ctx)
	if u == nil {
		return
	}
	price, ok := fakePrices[item]
	switch {
	case !ok:
		fakeError(ctx, fasthttp.StatusBadRequest, "unknown item")
	case u.coins < price:
		f.insufficient++
		fakeError(ctx, fasthttp.StatusBadRequest, "insufficient coins")
	default:
		u.coins -= price
		u.inventory[item]++
	}
}

func (f *fakeAPI) send(ctx *fasthttp.RequestCtx) {
	from, u := f.user(ctx)
	if u == nil {
		return
	}
	v, err := fastjson.ParseBytes(ctx.PostBody())
	if err != nil {
		fakeError(ctx, fasthttp.StatusBadRequest, "bad JSON")
		return
	}
	to, amount := string(v.GetStringBytes("toUser")), v.GetInt("amount")
	dst := f.users[to]
	switch {
	case amount <= 0:
		fakeError(ctx, fasthttp.StatusBadRequest, "bad amount")
	case dst == nil:
		fakeError(ctx, fasthttp.StatusBadRequest, "unknown recipient")
	case to == from:
		fakeError(ctx, fasthttp.StatusBadRequest, "cannot send to yourself")
	case u.coins < amount:
		f.insufficient++
		fakeError(ctx, fasthttp.StatusBadRequest, "insufficient coins")
	default:
		u.coins -= amount
		dst.coins += amount
		u.sent = append(u.sent, fakeTransfer{to, amount})
		dst.received = append(dst.received, fakeTransfer{from, amount})
	}
}

// snapshot returns copies of the counters.
func (f *fakeAPI) snapshot() (served map[string]int, insufficient, totalCoins int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	served = map[string]int{}
	for k, v := range f.served {
		served[k] = v
	}
	for _, u := range f.users {
		totalCoins += u.coins
	}
	return served, f.insufficient, totalCoins
}

// startFake serves f on a random loopback port until the test ends.
func startFake(t *testing.T, f *fakeAPI) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: f.handle}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		if f.hold != nil {
			close(f.hold)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	return ln.Addr().String()
}
