package main

import (
	"bytes"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// op is one kind of request in the mix.
type op int

const (
	opAuth op = iota
	opInfo
	opBuy
	opSend
	numOps
)

var opNames = [numOps]string{"auth", "info", "buy", "send"}

// mix holds the relative weights of the operations.
type mix struct {
	weights [numOps]int
	total   int
}

// parseMix parses "info=50,buy=25,send=25,auth=0". Operations left out get
// weight 0; at least one weight must be positive.
func parseMix(s string) (mix, error) {
	var m mix
	var seen [numOps]bool
	for part := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return mix{}, fmt.Errorf("mix entry %q: want name=weight", part)
		}
		o, ok := opByName(strings.TrimSpace(name))
		if !ok {
			return mix{}, fmt.Errorf("mix entry %q: unknown operation (want auth, info, buy or send)", part)
		}
		if seen[o] {
			return mix{}, fmt.Errorf("mix: %s given twice", opNames[o])
		}
		seen[o] = true
		w, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil || w < 0 || w > 1_000_000 {
			return mix{}, fmt.Errorf("mix entry %q: weight must be an integer in [0, 1000000]", part)
		}
		m.weights[o] = w
		m.total += w
	}
	if m.total == 0 {
		return mix{}, errors.New("mix: all weights are zero")
	}
	return m, nil
}

func opByName(name string) (op, bool) {
	for o, n := range opNames {
		if n == name {
			return op(o), true
		}
	}
	return 0, false
}

// pick draws an operation with probability weight/total.
func (m *mix) pick(rng *rand.Rand) op {
	n := rng.IntN(m.total)
	for o, w := range m.weights {
		if n < w {
			return op(o)
		}
		n -= w
	}
	return opInfo // unreachable when total > 0
}

func (m *mix) asMap() map[string]int {
	out := make(map[string]int, numOps)
	for o, w := range m.weights {
		out[opNames[o]] = w
	}
	return out
}

// mixString renders a mix map in the canonical operation order.
func mixString(m map[string]int) string {
	parts := make([]string, 0, numOps)
	for _, n := range opNames {
		parts = append(parts, n+"="+strconv.Itoa(m[n]))
	}
	return strings.Join(parts, ",")
}

// Buys are mostly cheap items (cheapShare percent) so that the 1000 coins a
// user starts with last long enough for the mix to stay representative;
// the rest exercise the other catalogue entries.
var (
	cheapItems = []string{"pen", "socks", "cup"}
	otherItems = []string{"book", "wallet", "t-shirt", "umbrella", "powerbank", "hoody", "pink-hoody"}
)

const cheapShare = 90

// user is a logged-in load generator account.
type user struct {
	name     string
	bearer   string // "Bearer <token>", prebuilt so requests do not concatenate
	authBody []byte // prebuilt auth request body
}

// target is everything needed to talk to the service under test. It is
// shared read-only by all workers once setup is done.
type target struct {
	client   *fasthttp.HostClient
	timeout  time.Duration
	fundsMsg []byte // lower-case body substring marking an expected 400
	users    []user
	authURL  string
	infoURL  string
	sendURL  string
	cheapURL []string
	otherURL []string
	// keyRun starts every Idempotency-Key of this run; empty: writes carry
	// no key (-keys=false).
	keyRun string
}

func newTarget(addr string, conns int, timeout time.Duration, fundsMsg string) *target {
	base := "http://" + addr
	host, _, _ := net.SplitHostPort(addr)
	t := &target{
		client: &fasthttp.HostClient{
			Addr:     addr,
			MaxConns: conns,
			// Never wait for a pooled connection longer than a request may
			// take (MaxConns >= workers, so this is only a safety net).
			MaxConnWaitTimeout:            timeout,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			// fasthttp dials IPv4 only unless told otherwise; needed for [::1].
			DialDualStack: strings.Contains(host, ":"),
		},
		timeout:  timeout,
		fundsMsg: bytes.ToLower([]byte(fundsMsg)),
		authURL:  base + "/api/auth",
		infoURL:  base + "/api/info",
		sendURL:  base + "/api/sendCoin",
	}
	for _, it := range cheapItems {
		t.cheapURL = append(t.cheapURL, base+"/api/buy/"+it)
	}
	for _, it := range otherItems {
		t.otherURL = append(t.otherURL, base+"/api/buy/"+it)
	}
	return t
}

// userName is the account name of loadgen user i.
func userName(prefix string, i int) string { return prefix + strconv.Itoa(i) }

// authBody builds the login body once per user. encoding/json (not
// strconv quoting, whose \x escapes are not JSON) because the password
// may hold any character.
func authBody(name, password string) []byte {
	b, _ := json.Marshal(struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}{name, password})
	return b
}

// worker owns one request/response pair and scratch buffers for its whole
// life, so steady-state requests do not allocate.
type worker struct {
	t    *target
	rng  *rand.Rand
	sh   *shard
	req  *fasthttp.Request
	resp *fasthttp.Response
	body []byte
	// key is "<run>-<worker>-" followed by the number of the write, so
	// every key of a run is distinct at the cost of one integer append.
	key       []byte
	keyPrefix int
	writes    uint64
}

func newWorker(t *target, sh *shard, id int, seed uint64) *worker {
	w := &worker{
		t: t, sh: sh,
		rng:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		req:  fasthttp.AcquireRequest(),
		resp: fasthttp.AcquireResponse(),
		body: make([]byte, 0, 128),
	}
	if t.keyRun != "" {
		w.key = make([]byte, 0, idempotencyKeyMax)
		w.key = append(w.key, t.keyRun...)
		w.key = append(w.key, '-')
		w.key = strconv.AppendInt(w.key, int64(id), 36)
		w.key = append(w.key, '-')
		w.keyPrefix = len(w.key)
	}
	return w
}

// idempotencyKeyMax is the service's limit on an Idempotency-Key (1-64
// printable ASCII characters); a key here is at most 16+1+4+1+20 = 42.
const idempotencyKeyMax = 64

// newKeyRun returns 16 random hex digits: keys are honoured for 24 hours
// per user, so a later run with the same users must not repeat a key, or
// its writes would be replays that change nothing.
func newKeyRun() string {
	var b [8]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b[:])
}

// setKey gives the write in w.req its own Idempotency-Key.
func (w *worker) setKey() {
	if w.key == nil {
		return
	}
	w.writes++
	w.key = strconv.AppendUint(w.key[:w.keyPrefix], w.writes, 10)
	w.req.Header.SetBytesV("Idempotency-Key", w.key)
}

func (w *worker) release() {
	fasthttp.ReleaseRequest(w.req)
	fasthttp.ReleaseResponse(w.resp)
}

// prepare fills w.req for operation o on behalf of a random user.
func (w *worker) prepare(o op) {
	t, req := w.t, w.req
	req.Reset()
	u := &t.users[w.rng.IntN(len(t.users))]
	switch o {
	case opAuth:
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(t.authURL)
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(u.authBody)
		return
	case opInfo:
		req.SetRequestURI(t.infoURL)
	case opBuy:
		if w.rng.IntN(100) < cheapShare {
			req.SetRequestURI(t.cheapURL[w.rng.IntN(len(t.cheapURL))])
		} else {
			req.SetRequestURI(t.otherURL[w.rng.IntN(len(t.otherURL))])
		}
		w.setKey()
	case opSend:
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(t.sendURL)
		req.Header.SetContentType("application/json")
		w.body = appendSendBody(w.body[:0], w.otherUser(u).name, 1+w.rng.IntN(5))
		req.SetBodyRaw(w.body)
		w.setKey()
	}
	req.Header.Set(fasthttp.HeaderAuthorization, u.bearer)
}

// otherUser picks a random user different from u (setup guarantees at
// least two users whenever sends are in the mix).
func (w *worker) otherUser(u *user) *user {
	users := w.t.users
	for {
		v := &users[w.rng.IntN(len(users))]
		if v != u || len(users) == 1 {
			return v
		}
	}
}

func appendSendBody(b []byte, to string, amount int) []byte {
	b = append(b, `{"toUser":"`...)
	b = append(b, to...) // names are [A-Za-z0-9_.-]: no escaping needed
	b = append(b, `","amount":`...)
	b = strconv.AppendInt(b, int64(amount), 10)
	return append(b, '}')
}

// do sends one request of kind o. start is the time the latency is measured
// from; record says whether the result belongs to the measured window.
func (w *worker) do(o op, start time.Time, record bool) {
	w.prepare(o)
	err := w.t.client.DoTimeout(w.req, w.resp, w.t.timeout)
	lat := time.Since(start)
	w.sh.done.Add(1)
	if !record {
		return
	}
	status := 0
	if err == nil {
		status = w.resp.StatusCode()
	}
	w.sh.record(o, status, lat, classify(status, w.resp.Body(), err, w.t.fundsMsg))
}

// classify decides whether a result is a success, the expected business
// outcome "insufficient funds", or an error.
func classify(status int, body []byte, err error, fundsMsg []byte) outcome {
	switch {
	case err != nil && isTimeout(err):
		return outTimeout
	case err != nil:
		return outConnErr
	case status >= 200 && status < 300:
		return outOK
	case status == fasthttp.StatusBadRequest && len(fundsMsg) > 0 && containsFold(body, fundsMsg):
		return outExpected
	default:
		return outHTTPErr
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// containsFold reports whether body contains the lower-case needle,
// ignoring ASCII case, without allocating.
func containsFold(body, needle []byte) bool {
	for i := 0; i+len(needle) <= len(body); i++ {
		j := 0
		for j < len(needle) && lowerASCII(body[i+j]) == needle[j] {
			j++
		}
		if j == len(needle) {
			return true
		}
	}
	return false
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
