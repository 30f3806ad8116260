package main

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestParseMix(t *testing.T) {
	tests := []struct {
		in      string
		want    [numOps]int // auth, info, buy, send
		wantErr string
	}{
		{in: "info=50,buy=25,send=25,auth=0", want: [numOps]int{0, 50, 25, 25}},
		{in: "info=1", want: [numOps]int{0, 1, 0, 0}},
		{in: " auth = 3 , send=7 ", want: [numOps]int{3, 0, 0, 7}},
		{in: "", wantErr: "want name=weight"},
		{in: "info", wantErr: "want name=weight"},
		{in: "info=50,", wantErr: "want name=weight"},
		{in: "nap=5", wantErr: "unknown operation"},
		{in: "info=-1", wantErr: "weight must be"},
		{in: "info=x", wantErr: "weight must be"},
		{in: "info=1.5", wantErr: "weight must be"},
		{in: "info=1,info=2", wantErr: "given twice"},
		{in: "info=0,buy=0", wantErr: "all weights are zero"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			m, err := parseMix(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseMix(%q) error = %v, want containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseMix(%q): %v", tt.in, err)
			}
			if m.weights != tt.want {
				t.Errorf("weights = %v, want %v", m.weights, tt.want)
			}
		})
	}
}

func TestMixPickFollowsWeights(t *testing.T) {
	m, err := parseMix("info=50,buy=25,send=25,auth=0")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var got [numOps]int
	const n = 100000
	for range n {
		got[m.pick(rng)]++
	}
	if got[opAuth] != 0 {
		t.Errorf("auth picked %d times with weight 0", got[opAuth])
	}
	for o, w := range m.weights {
		share := float64(got[o]) / n
		if want := float64(w) / 100; share < want-0.01 || share > want+0.01 {
			t.Errorf("%s share %.3f, want %.2f±0.01", opNames[o], share, want)
		}
	}
}

func TestPercentileExactSmallValues(t *testing.T) {
	// Values below subCount are stored exactly, so these are exact.
	s := newHistSnap()
	for v := uint64(1); v <= 50; v++ {
		s.recordValue(v)
	}
	tests := []struct {
		q    float64
		want uint64
	}{
		{0.01, 1}, {0.02, 1}, {0.03, 2}, {0.5, 25}, {0.9, 45}, {0.99, 50}, {1, 50},
	}
	for _, tt := range tests {
		if got := s.percentile(tt.q); got != tt.want {
			t.Errorf("p%v = %d, want %d", tt.q*100, got, tt.want)
		}
	}
	if s.max != 50 || s.sum != 50*51/2 || s.total != 50 {
		t.Errorf("max/sum/total = %d/%d/%d", s.max, s.sum, s.total)
	}
}

func TestPercentileKnownDistributions(t *testing.T) {
	tests := []struct {
		name   string
		values []uint64
		q      float64
		want   uint64 // exact answer; the histogram may overstate by 1/subCount
	}{
		{"uniform 1..100000 p50", seq(1, 100000), 0.50, 50000},
		{"uniform 1..100000 p90", seq(1, 100000), 0.90, 90000},
		{"uniform 1..100000 p99", seq(1, 100000), 0.99, 99000},
		{"uniform 1..100000 p99.9", seq(1, 100000), 0.999, 99900},
		{"bimodal p50", append(repeat(1000, 990), repeat(250000, 10)...), 0.50, 1000},
		{"bimodal p99", append(repeat(1000, 990), repeat(250000, 10)...), 0.99, 1000},
		{"bimodal p99.9", append(repeat(1000, 990), repeat(250000, 10)...), 0.999, 250000},
		{"single value", []uint64{777}, 0.5, 777},
		{"huge clamps to max", []uint64{1 << 40}, 0.99, 1 << 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newHistSnap()
			for _, v := range tt.values {
				s.recordValue(v)
			}
			got := s.percentile(tt.q)
			if got < tt.want || float64(got) > float64(tt.want)*(1+1.0/subCount) {
				t.Errorf("percentile(%v) = %d, want within [%d, %d]", tt.q, got, tt.want, tt.want+tt.want/subCount)
			}
		})
	}
	if got := newHistSnap().percentile(0.99); got != 0 {
		t.Errorf("empty histogram p99 = %d, want 0", got)
	}
}

func TestBucketBoundsRoundTrip(t *testing.T) {
	// Every value must land in a bucket whose upper bound is >= the value
	// and within the promised relative error.
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096, 123456, 99_999_999, maxValue} {
		idx := bucketIndex(v)
		hi := bucketHigh(idx)
		if idx < 0 || idx >= numBuckets || hi < v || float64(hi-v) > float64(v)/subCount {
			t.Errorf("v=%d: idx=%d high=%d", v, idx, hi)
		}
		if idx > 0 && bucketHigh(idx-1) >= v {
			t.Errorf("v=%d: previous bucket high %d also covers it", v, bucketHigh(idx-1))
		}
	}
}

func TestRecorderMergesShards(t *testing.T) {
	r := newRecorder(3)
	r.shardFor(0).record(opInfo, 200, time.Millisecond, outOK)
	r.shardFor(1).record(opInfo, 200, 3*time.Millisecond, outOK)
	r.shardFor(2).record(opBuy, 400, 2*time.Millisecond, outExpected)
	r.shardFor(2).record(opSend, 503, time.Millisecond, outHTTPErr)
	r.shardFor(1).record(opSend, 0, 2*time.Second, outTimeout)
	r.shardFor(0).record(opSend, 0, time.Microsecond, outConnErr)
	r.missed[opInfo].Add(2)
	eps, total := r.report(time.Second)
	if eps["info"].Count != 2 || eps["info"].Latency.Max != 3000 || eps["info"].Missed != 2 {
		t.Errorf("info = %+v", eps["info"])
	}
	if eps["buy"].Expected400 != 1 || eps["buy"].Errors != 0 || eps["buy"].Status["400"] != 1 {
		t.Errorf("buy = %+v", eps["buy"])
	}
	send := eps["send"]
	if send.Count != 3 || send.Errors != 3 || send.Timeouts != 1 || send.ConnErrors != 1 || send.HTTPErrors != 1 {
		t.Errorf("send = %+v", send)
	}
	if send.Latency.Max != 2_000_000 { // the timeout is recorded, the connection error is not
		t.Errorf("send max latency = %d", send.Latency.Max)
	}
	if total.Count != 6 || total.Errors != 3 || total.Expected400 != 1 || total.Missed != 2 || total.RPS != 6 {
		t.Errorf("total = %+v", total)
	}
	if sumStatus(total.Status)+total.Timeouts+total.ConnErrors != total.Count {
		t.Errorf("status sum inconsistent: %+v", total)
	}
}

func TestClassify(t *testing.T) {
	funds := []byte("insufficient")
	tests := []struct {
		name   string
		status int
		body   string
		err    error
		want   outcome
	}{
		{"ok", 200, `{}`, nil, outOK},
		{"insufficient funds", 400, `{"errors":"Insufficient coins"}`, nil, outExpected},
		{"other 400", 400, `{"errors":"unknown item"}`, nil, outHTTPErr},
		{"funds message on 500", 500, `{"errors":"insufficient coins"}`, nil, outHTTPErr},
		{"503", 503, `{"errors":"overloaded"}`, nil, outHTTPErr},
		{"timeout", 0, "", fasthttp.ErrTimeout, outTimeout},
		{"net timeout", 0, "", &net.OpError{Op: "read", Err: timeoutErr{}}, outTimeout},
		{"refused", 0, "", errors.New("connection refused"), outConnErr},
	}
	for _, tt := range tests {
		if got := classify(tt.status, []byte(tt.body), tt.err, funds); got != tt.want {
			t.Errorf("%s: classify = %d, want %d", tt.name, got, tt.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		addr        string
		allowRemote bool
		ok          bool
	}{
		{"127.0.0.1:8080", false, true},
		{"127.1.2.3:80", false, true},
		{"localhost:8080", false, true},
		{"LOCALHOST.:8080", false, true},
		{"[::1]:8080", false, true},
		{"[::ffff:127.0.0.1]:8080", false, true},
		{"10.0.0.1:8080", false, false},
		{"0.0.0.0:8080", false, false},
		{":8080", false, false},
		{"example.com:8080", false, false},
		{"localhost.example.com:80", false, false},
		{"[::2]:8080", false, false},
		{"10.0.0.1:8080", true, true},
		{"127.0.0.1", false, false},      // no port
		{"127.0.0.1:99999", true, false}, // bad port even when remote allowed
	}
	for _, tt := range tests {
		err := checkLoopback(tt.addr, tt.allowRemote)
		if (err == nil) != tt.ok {
			t.Errorf("checkLoopback(%q, %v) = %v, want ok=%v", tt.addr, tt.allowRemote, err, tt.ok)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{args: nil},
		{args: []string{"-addr", "http://127.0.0.1:9000", "-rate", "100", "-c", "4"}},
		{args: []string{"-serve-static", "127.0.0.1:0", "-d", "0"}},
		{args: []string{"-addr", "192.168.1.1:80"}, wantErr: "not loopback"},
		{args: []string{"-addr", "192.168.1.1:80", "-allow-remote"}},
		{args: []string{"-serve-static", "0.0.0.0:8081"}, wantErr: "not loopback"},
		{args: []string{"-c", "0"}, wantErr: "-c must be"},
		{args: []string{"-mix", "info=0"}, wantErr: "all weights are zero"},
		{args: []string{"-users", "1"}, wantErr: "sends need"},
		{args: []string{"-users", "1", "-mix", "info=1"}},
		{args: []string{"-prefix", "a b"}, wantErr: "-prefix may only"},
		{args: []string{"-prefix", strings.Repeat("x", 62), "-users", "1000"}, wantErr: "too long"},
		{args: []string{"-d", "0"}, wantErr: "-d must be"},
		{args: []string{"-rate", "-1"}, wantErr: "-rate must be"},
		{args: []string{"-bogus"}, wantErr: "not defined"},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSendBodyAndAuthBody(t *testing.T) {
	if got := string(appendSendBody(nil, "lg7", 3)); got != `{"toUser":"lg7","amount":3}` {
		t.Errorf("send body = %s", got)
	}
	if got := string(authBody("lg1", "p\"\x00w")); got != `{"username":"lg1","password":"p\"\u0000w"}` {
		t.Errorf("auth body = %s", got)
	}
}

func TestStaticBodySize(t *testing.T) {
	if n := len(staticBody); n < 200 || n > 320 {
		t.Errorf("static body is %d bytes, want about 250", n)
	}
}

func seq(from, to uint64) []uint64 {
	out := make([]uint64, 0, to-from+1)
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

func repeat(v uint64, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func sumStatus(m map[string]uint64) uint64 {
	var s uint64
	for _, n := range m {
		s += n
	}
	return s
}

func TestParseFlagsServeStaticDuration(t *testing.T) {
	tests := []struct {
		args []string
		want time.Duration
	}{
		{[]string{"-serve-static", "127.0.0.1:0"}, 0}, // until signal
		{[]string{"-serve-static", "127.0.0.1:0", "-d", "5s"}, 5 * time.Second},
		{[]string{"-d", "5s"}, 5 * time.Second},
		{nil, 30 * time.Second},
	}
	for _, tt := range tests {
		cfg, err := parseFlags(tt.args, io.Discard)
		if err != nil || cfg.Duration != tt.want {
			t.Errorf("parseFlags(%q): duration %v err %v, want %v", tt.args, cfg.Duration, err, tt.want)
		}
	}
}
