package main

import (
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// Latency histogram: log-linear ("HDR-like") buckets over microseconds.
// Values below 2^subBits are exact; above that every power of two is split
// into subCount equal sub-buckets, so the relative error is at most
// 1/subCount (~1.6%) while the whole range up to ~268 s fits in ~12 KiB.
const (
	subBits    = 6
	subCount   = 1 << subBits
	maxBits    = 28 // values >= 2^28 µs (~268 s) are clamped; max stays exact
	maxValue   = 1<<maxBits - 1
	numBuckets = (maxBits - subBits + 1) * subCount
	maxStatus  = 600 // status codes outside [100, 600) are counted under 0
)

// bucketIndex maps a value in µs to its bucket.
func bucketIndex(v uint64) int {
	if v > maxValue {
		v = maxValue
	}
	shift := bits.Len64(v) - subBits - 1
	if shift < 0 {
		shift = 0
	}
	return shift*subCount + int(v>>uint(shift))
}

// bucketHigh is the largest value that maps to bucket idx; percentiles
// report it (like HdrHistogram's "highest equivalent value") so they never
// understate latency.
func bucketHigh(idx int) uint64 {
	shift := idx/subCount - 1
	if shift < 0 {
		shift = 0
	}
	low := uint64(idx-shift*subCount) << uint(shift)
	return low + (1 << uint(shift)) - 1
}

// histogram is written by the workers of one shard and read concurrently
// by the progress printer and the final report. Plain atomics keep this
// race-free without any mutex; the adds are uncontended in the common case
// because each shard belongs to few workers.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
}

func (h *histogram) record(us uint64) {
	h.counts[bucketIndex(us)].Add(1)
	h.sum.Add(us)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// histSnap is a plain (non-atomic) copy used for merging and percentiles.
type histSnap struct {
	counts []uint64
	total  uint64
	sum    uint64
	max    uint64
}

func newHistSnap() *histSnap { return &histSnap{counts: make([]uint64, numBuckets)} }

func (s *histSnap) add(h *histogram) {
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] += c
		s.total += c
	}
	s.sum += h.sum.Load()
	s.max = max(s.max, h.max.Load())
}

func (s *histSnap) merge(o *histSnap) {
	for i, c := range o.counts {
		s.counts[i] += c
	}
	s.total += o.total
	s.sum += o.sum
	s.max = max(s.max, o.max)
}

// recordValue adds one value; used by tests and for building snapshots
// directly without atomics.
func (s *histSnap) recordValue(us uint64) {
	s.counts[bucketIndex(us)]++
	s.total++
	s.sum += us
	s.max = max(s.max, us)
}

// percentile returns the value at quantile q (0 < q <= 1) in µs: the
// smallest bucket whose cumulative count reaches ceil(q*total), clamped to
// the exact observed maximum. Returns 0 for an empty histogram.
func (s *histSnap) percentile(q float64) uint64 {
	if s.total == 0 {
		return 0
	}
	// The epsilon keeps float noise (0.02*50 = 1.0000000000000002) from
	// bumping the rank by one.
	rank := uint64(math.Ceil(q*float64(s.total) - 1e-9))
	rank = min(max(rank, 1), s.total)
	var cum uint64
	for i, c := range s.counts {
		cum += c
		if cum >= rank {
			if i == numBuckets-1 { // overflow bucket: only the max is known
				return s.max
			}
			return min(bucketHigh(i), s.max)
		}
	}
	return s.max
}

// outcome classifies one finished request.
type outcome int

const (
	outOK       outcome = iota // 2xx
	outExpected                // 400 insufficient funds: a business result, not an error
	outHTTPErr                 // any other status
	outTimeout                 // request timed out
	outConnErr                 // connection / protocol error
)

// epCounters is everything recorded for one endpoint in one shard.
type epCounters struct {
	lat      histogram
	status   [maxStatus]atomic.Uint64
	count    atomic.Uint64
	expected atomic.Uint64
	httpErr  atomic.Uint64
	timeouts atomic.Uint64
	connErr  atomic.Uint64
}

// shard holds the counters of a group of workers.
type shard struct {
	ep [numOps]epCounters
	// done counts every completed request, warm-up included; it only drives
	// the live requests/s figure.
	done atomic.Uint64
}

// recorder owns all shards. Workers are assigned shards round-robin and the
// shard count is capped so memory stays bounded (~70 KiB per shard) even
// with thousands of workers.
type recorder struct {
	shards []shard
	missed [numOps]atomic.Uint64
}

const maxShards = 64

func newRecorder(workers int) *recorder {
	return &recorder{shards: make([]shard, min(max(workers, 1), maxShards))}
}

func (r *recorder) shardFor(worker int) *shard { return &r.shards[worker%len(r.shards)] }

// record stores one measured request. Latency is recorded for HTTP
// responses and timeouts (a timeout is real waiting time), but not for
// connection errors, whose near-zero latency would flatter percentiles.
func (s *shard) record(o op, status int, lat time.Duration, oc outcome) {
	e := &s.ep[o]
	e.count.Add(1)
	switch oc {
	case outExpected:
		e.expected.Add(1)
	case outHTTPErr:
		e.httpErr.Add(1)
	case outTimeout:
		e.timeouts.Add(1)
	case outConnErr:
		e.connErr.Add(1)
	}
	if oc == outTimeout || oc == outConnErr {
		if oc == outTimeout {
			e.lat.record(uint64(lat / time.Microsecond))
		}
		return
	}
	if status < 100 || status >= maxStatus {
		status = 0
	}
	e.status[status].Add(1)
	e.lat.record(uint64(lat / time.Microsecond))
}

// progress returns totals for the live line: completions (including
// warm-up), measured errors and the measured p99 in µs.
func (r *recorder) progress() (done, errs, p99 uint64) {
	snap := newHistSnap()
	for i := range r.shards {
		sh := &r.shards[i]
		done += sh.done.Load()
		for o := range sh.ep {
			e := &sh.ep[o]
			errs += e.httpErr.Load() + e.timeouts.Load() + e.connErr.Load()
			snap.add(&e.lat)
		}
	}
	return done, errs, snap.percentile(0.99)
}

// The -json output is one object (one line) with this schema. Latencies are
// integers in microseconds; rates are requests per second.
//
//	{
//	  "config": {                       // the configuration used
//	    "addr": "127.0.0.1:8080", "model": "closed" | "open",
//	    "concurrency": 64, "rate": 0,    // rate is 0 in the closed model
//	    "users": 1000, "prefix": "lg", "no_setup": false,
//	    "mix": {"auth": 0, "info": 50, "buy": 25, "send": 25},
//	    "stages": "10s:100,30s:400",    // -stages as given; absent without
//	    "keys": true,                    // writes carried an Idempotency-Key
//	    "duration_s": 30, "warmup_s": 2, "timeout_s": 2,
//	    "funds_msg": "insufficient"      // body substring of an expected 400
//	  },
//	  "setup": {"skipped": false, "users": 1000, "seconds": 12.5},
//	  "window_s": 30.0,          // measured time span the rates are based on
//	  "interrupted": false,      // stopped early by SIGINT/SIGTERM
//	  "unfinished_workers": 0,   // workers still inside a request at the hard stop
//	  "endpoints": {"auth": S, "info": S, "buy": S, "send": S},
//	  "total": S,
//	  "thresholds": {            // only with -max-p99 or -max-error-rate
//	    "max_p99_us": 10000, "max_error_rate": 0.001, // those given
//	    "p99_us": 4200, "error_rate": 0,  // the total's
//	    "passed": true, "failures": []    // one sentence per violation
//	  }
//	}
//
// where S is
//
//	{
//	  "count": 1234,    // measured requests finished: responses + timeouts + conn errors
//	  "rps": 41.1,      // count / window_s
//	  "latency_us": {"p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0, "mean": 0},
//	  "status": {"200": 1200, "400": 34},  // HTTP responses by status code;
//	                    // sum(status) + timeouts + conn_errors == count
//	  "expected_400": 30, // 400 insufficient funds (also counted in status["400"])
//	  "errors": 4,      // http_errors + timeouts + conn_errors
//	  "http_errors": 4, // non-2xx other than expected_400
//	  "timeouts": 0, "conn_errors": 0,
//	  "missed": 0       // open model: arrivals dropped because no worker was free
//	}
type Report struct {
	Config            reportConfig        `json:"config"`
	Setup             setupInfo           `json:"setup"`
	WindowS           float64             `json:"window_s"`
	Interrupted       bool                `json:"interrupted"`
	UnfinishedWorkers int                 `json:"unfinished_workers"`
	Endpoints         map[string]EpReport `json:"endpoints"`
	Total             EpReport            `json:"total"`
	Thresholds        *thresholdReport    `json:"thresholds,omitempty"`
}

type setupInfo struct {
	Skipped bool    `json:"skipped"`
	Users   int     `json:"users"`
	Seconds float64 `json:"seconds"`
}

// EpReport is the per-endpoint (or total) part of the report.
type EpReport struct {
	Count       uint64            `json:"count"`
	RPS         float64           `json:"rps"`
	Latency     latencyReport     `json:"latency_us"`
	Status      map[string]uint64 `json:"status"`
	Expected400 uint64            `json:"expected_400"`
	Errors      uint64            `json:"errors"`
	HTTPErrors  uint64            `json:"http_errors"`
	Timeouts    uint64            `json:"timeouts"`
	ConnErrors  uint64            `json:"conn_errors"`
	Missed      uint64            `json:"missed"`
}

type latencyReport struct {
	P50  uint64 `json:"p50"`
	P90  uint64 `json:"p90"`
	P99  uint64 `json:"p99"`
	P999 uint64 `json:"p999"`
	Max  uint64 `json:"max"`
	Mean uint64 `json:"mean"`
}

// epTotals accumulates one endpoint across shards before conversion.
type epTotals struct {
	hist                                       *histSnap
	status                                     [maxStatus]uint64
	count, expected, httpErr, timeouts, connEr uint64
	missed                                     uint64
}

func (t *epTotals) addShard(e *epCounters) {
	t.hist.add(&e.lat)
	for i := range e.status {
		t.status[i] += e.status[i].Load()
	}
	t.count += e.count.Load()
	t.expected += e.expected.Load()
	t.httpErr += e.httpErr.Load()
	t.timeouts += e.timeouts.Load()
	t.connEr += e.connErr.Load()
}

func (t *epTotals) merge(o *epTotals) {
	t.hist.merge(o.hist)
	for i := range o.status {
		t.status[i] += o.status[i]
	}
	t.count += o.count
	t.expected += o.expected
	t.httpErr += o.httpErr
	t.timeouts += o.timeouts
	t.connEr += o.connEr
	t.missed += o.missed
}

func (t *epTotals) toReport(window time.Duration) EpReport {
	r := EpReport{
		Count: t.count, Expected400: t.expected, HTTPErrors: t.httpErr,
		Timeouts: t.timeouts, ConnErrors: t.connEr, Missed: t.missed,
		Errors: t.httpErr + t.timeouts + t.connEr,
		Status: map[string]uint64{},
	}
	if window > 0 {
		r.RPS = float64(t.count) / window.Seconds()
	}
	for code, n := range t.status {
		if n > 0 {
			r.Status[strconv.Itoa(code)] = n
		}
	}
	h := t.hist
	r.Latency = latencyReport{
		P50: h.percentile(0.50), P90: h.percentile(0.90), P99: h.percentile(0.99),
		P999: h.percentile(0.999), Max: h.max,
	}
	if h.total > 0 {
		r.Latency.Mean = h.sum / h.total
	}
	return r
}

// report merges all shards. It is safe to call while workers still run
// (after a hard stop): every read is atomic, late results are just missed.
func (r *recorder) report(window time.Duration) (map[string]EpReport, EpReport) {
	total := epTotals{hist: newHistSnap()}
	eps := make(map[string]EpReport, numOps)
	for o := range numOps {
		t := epTotals{hist: newHistSnap(), missed: r.missed[o].Load()}
		for i := range r.shards {
			t.addShard(&r.shards[i].ep[o])
		}
		total.merge(&t)
		eps[opNames[o]] = t.toReport(window)
	}
	return eps, total.toReport(window)
}

// writeText prints the human-readable report table.
func writeText(w io.Writer, rep *Report) error {
	c := rep.Config
	fmt.Fprintf(w, "target %s, %s model, c=%d", c.Addr, c.Model, c.Concurrency)
	switch {
	case c.Stages != "":
		fmt.Fprintf(w, ", stages %s", c.Stages)
	case c.Model == "open":
		fmt.Fprintf(w, ", rate=%g/s", c.Rate)
	}
	keys := "with"
	if !c.Keys {
		keys = "without"
	}
	fmt.Fprintf(w, ", window %.1fs (warm-up %gs excluded), mix %s, writes %s Idempotency-Key\n",
		rep.WindowS, c.WarmupS, mixString(c.Mix), keys)
	if rep.Interrupted {
		fmt.Fprintln(w, "run interrupted by signal: figures cover the shortened window")
	}
	if rep.UnfinishedWorkers > 0 {
		fmt.Fprintf(w, "hard stop: %d workers were still inside a request\n", rep.UnfinishedWorkers)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "endpoint\tcount\treq/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\texp-400\terrors\ttimeouts\tconn-err\tmissed\tstatuses\t")
	for o := range numOps {
		writeRow(tw, opNames[o], rep.Endpoints[opNames[o]])
	}
	writeRow(tw, "total", rep.Total)
	return tw.Flush()
}

func writeRow(w io.Writer, name string, e EpReport) {
	ms := func(us uint64) string { return strconv.FormatFloat(float64(us)/1000, 'f', 2, 64) }
	l := e.Latency
	fmt.Fprintf(w, "%s\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t\n",
		name, e.Count, e.RPS, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max),
		e.Expected400, e.Errors, e.Timeouts, e.ConnErrors, e.Missed, statusString(e.Status))
}

// statusString renders status counts as "200:10 400:2", sorted by code.
func statusString(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	codes := make([]string, 0, len(m))
	for k := range m {
		codes = append(codes, k)
	}
	sort.Strings(codes)
	parts := make([]string, len(codes))
	for i, k := range codes {
		parts[i] = k + ":" + strconv.FormatUint(m[k], 10)
	}
	return strings.Join(parts, " ")
}
