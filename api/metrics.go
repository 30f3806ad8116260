package api

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"merch/actors"
)

// route identifies an endpoint for metric labels (never per user).
type route uint8

const (
	routeAuth route = iota
	routeInfo
	routeSend
	routeBuy
	routeOther // 404, 405 and GET /openapi.yaml
	routeCount
)

var routeNames = [routeCount]string{"auth", "info", "send", "buy", "other"}

// knownCodes are the statuses this server answers with, taken from the
// error table (errors.go) so the two cannot drift: 200, every row's
// status, and 500 for errors no row names. Their label children are
// resolved at start-up (2.9 ns per Inc against ~53 ns for WithLabelValues
// on each call).
var knownCodes = func() []int {
	codes := []int{200, 500}
	for _, r := range errorReplies {
		if !slices.Contains(codes, r.status) {
			codes = append(codes, r.status)
		}
	}
	slices.Sort(codes)
	return codes
}()

// httpMetrics holds merch_http_* with children resolved up front.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration [routeCount]prometheus.Observer
	counts   [routeCount][600]prometheus.Counter
}

// latencyBuckets span 50 µs to 2 s.
var latencyBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "merch_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
	}
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "merch_http_request_duration_seconds", Help: "HTTP request latency by route.",
		Buckets: latencyBuckets,
	}, []string{"route"})
	reg.MustRegister(m.requests, dur, newShedCollector())
	for r := range routeCount {
		m.duration[r] = dur.WithLabelValues(routeNames[r])
		for _, c := range knownCodes {
			m.counts[r][c] = m.requests.WithLabelValues(routeNames[r], strconv.Itoa(c))
		}
	}
	return m
}

func (m *httpMetrics) observe(r route, code int, d time.Duration) {
	m.duration[r].Observe(d.Seconds())
	if code >= 0 && code < len(m.counts[r]) && m.counts[r][code] != nil {
		m.counts[r][code].Inc()
		return
	}
	m.requests.WithLabelValues(routeNames[r], strconv.Itoa(code)).Inc()
}

// errHashQueueFull is actors.ErrOverloaded (503) with its cause named for
// merch_shed_total: bcrypt is saturated.
var errHashQueueFull = fmt.Errorf("%w: bcrypt queue full", actors.ErrOverloaded)

// shedReasons name why a request was answered 503, most specific cause
// first (a cause wraps its generic error): merch_shed_total{reason}. The
// set is fixed; README "Observability" lists it.
var shedReasons = [...]struct {
	err    error
	reason string
}{
	{actors.ErrJournalFull, "journal_queue_full"},         // JOURNAL_QUEUE records waiting
	{actors.ErrJournalUnavailable, "journal_unavailable"}, // database writes failing, or the journal halted
	{actors.ErrNotDurable, "not_durable"},                 // a change not confirmed in REQUEST_TIMEOUT: outcome unknown
	{errHashQueueFull, "hash_queue_full"},                 // bcrypt saturated (HASH_QUEUE, HASH_WORKERS)
	{actors.ErrUserBusy, "user_busy"},                     // INFLIGHT_PER_USER pending for the user
	{actors.ErrOverloaded, "overloaded"},                  // any other bounded queue
	{actors.ErrUnavailable, "user_unavailable"},           // user not loaded in time, being rebuilt, or its shard changing hands
	{actors.ErrClosed, "shutting_down"},                   // shutdown began
	{actors.ErrNotOwner, "not_owner"},                     // cluster: this node does not own the user's shard (not forwarded)
	{errNoOwner, "no_owner"},                              // cluster: no owner known after the retries
	{errForwardUnknown, "forward_unknown"},                // cluster: the owner did not answer a forwarded change
}

// Reasons outside the error table: a connection refused by MAX_CONNS
// (internal/listener answers it 503 itself) and a 503 no row names.
const (
	shedMaxConns = len(shedReasons) + iota
	shedOther
	shedReasonCount
)

// shedCounts are per process (writeError is a plain function; a process
// runs one public server); shedCollector exports them.
var shedCounts [shedReasonCount]atomic.Uint64

func shedReason(i int) string {
	switch i {
	case shedMaxConns:
		return "max_conns"
	case shedOther:
		return "other"
	}
	return shedReasons[i].reason
}

// countShed counts one 503 answered for err. It allocates nothing.
func countShed(err error) {
	for i := range shedReasons {
		if errors.Is(err, shedReasons[i].err) {
			shedCounts[i].Add(1)
			return
		}
	}
	shedCounts[shedOther].Add(1)
}

// CountShedConn counts a connection refused 503 by the MAX_CONNS cap
// (listener.ReasonMaxConns), as merch_shed_total{reason="max_conns"}.
func CountShedConn() { shedCounts[shedMaxConns].Add(1) }

// shedCollector exports merch_shed_total{reason}, every reason from the
// start (at 0), so rate() and alerts see a series before the first shed.
type shedCollector struct {
	descs [shedReasonCount]*prometheus.Desc
}

func newShedCollector() *shedCollector {
	c := &shedCollector{}
	for i := range c.descs {
		c.descs[i] = prometheus.NewDesc("merch_shed_total",
			"Requests answered 503 (and connections refused 503 by MAX_CONNS), by cause.",
			nil, prometheus.Labels{"reason": shedReason(i)})
	}
	return c
}

func (c *shedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *shedCollector) Collect(ch chan<- prometheus.Metric) {
	for i, d := range c.descs {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(shedCounts[i].Load()))
	}
}
