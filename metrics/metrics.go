package metrics

import (
	"errors"
	"regexp"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"merch/actors"
)

var fastBuckets = []float64{.000005, .00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2}

// Actors implements actors.Metrics with merch_actor_* metrics.
type Actors struct {
	wait        prometheus.Histogram
	messages    [len(actors.MessageKinds)]prometheus.Counter
	process     [len(actors.MessageKinds)]prometheus.Observer
	activations prometheus.Counter
	passivation prometheus.Counter
	panics      prometheus.Counter
	replays     prometheus.Counter
	conflicts   prometheus.Counter
	inFlight    prometheus.Counter
}

var _ actors.Metrics = (*Actors)(nil)

// NewActors registers the actor metrics with reg.
func NewActors(reg prometheus.Registerer) *Actors {
	m := &Actors{
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "merch_actor_mailbox_wait_seconds",
			Help: "Time from enqueue to the start of processing, user actors.", Buckets: fastBuckets}),
		activations: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_actor_activations_total",
			Help: "User actors spawned (loaded from PostgreSQL or registered)."}),
		passivation: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_actor_passivations_total",
			Help: "User actors stopped after being idle (or rebuilt after a failure)."}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_actor_panics_total",
			Help: "Panics in a user actor's Receive (the actor is rebuilt from PostgreSQL)."}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_idempotency_replays_total",
			Help: "Keyed changes answered from their Idempotency-Key (the first outcome, not applied again)."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_idempotency_conflicts_total",
			Help: "Idempotency-Keys reused for a different request (answered 422)."}),
		inFlight: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_idempotency_in_flight_total",
			Help: "Keyed changes refused because the key's first use was still pending (answered 409)."}),
	}
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "merch_actor_messages_total",
		Help: "Messages processed by user actors, by type."}, []string{"type"})
	proc := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "merch_actor_process_seconds",
		Help: "Time spent processing one message, by type.", Buckets: fastBuckets}, []string{"type"})
	for i, k := range actors.MessageKinds {
		m.messages[i] = msgs.WithLabelValues(k.String())
		m.process[i] = proc.WithLabelValues(k.String())
	}
	reg.MustRegister(m.wait, m.activations, m.passivation, m.panics, m.replays, m.conflicts, m.inFlight, msgs, proc)
	return m
}

func (m *Actors) MailboxWait(d time.Duration) { m.wait.Observe(d.Seconds()) }
func (m *Actors) Processed(k actors.MessageKind, d time.Duration) {
	m.messages[k].Inc()
	m.process[k].Observe(d.Seconds())
}
func (m *Actors) Activated()  { m.activations.Inc() }
func (m *Actors) Passivated() { m.passivation.Inc() }
func (m *Actors) Panicked()   { m.panics.Inc() }
func (m *Actors) KeyReplayed(err error) {
	switch {
	case errors.Is(err, actors.ErrKeyReused):
		m.conflicts.Inc()
	case errors.Is(err, actors.ErrKeyInFlight):
		m.inFlight.Inc()
	default: // the first outcome: success or the remembered refusal
		m.replays.Inc()
	}
}

// Journal implements persist.JournalMetrics with merch_journal_* metrics
// (matched by method set: metrics does not import persist).
type Journal struct {
	batch       prometheus.Histogram
	flush       prometheus.Histogram
	records     [len(actors.RecordCounts{})]prometheus.Counter // by actors.RecordKind
	failures    prometheus.Counter
	fenced      prometheus.Counter
	unconfirmed prometheus.Counter
	oneCopy     prometheus.Counter
}

// NewJournal registers the journal metrics with reg.
func NewJournal(reg prometheus.Registerer) *Journal {
	m := &Journal{
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "merch_journal_batch_records",
			Help: "Records per committed journal batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		flush: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "merch_journal_flush_seconds",
			Help: "Time to write and commit one journal batch.", Buckets: fastBuckets}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_journal_failures_total",
			Help: "Failed journal batch attempts (each is retried)."}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_journal_fenced_total",
			Help: "Journal batches refused by the fence: this node no longer owned a shard it wrote."}),
		unconfirmed: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_journal_unconfirmed_total",
			Help: "Journal batches committed on the primary whose wait for the synchronous standby was cancelled (answered 503, outcome unknown)."}),
		oneCopy: prometheus.NewCounter(prometheus.CounterOpts{Name: "merch_journal_one_copy_records_total",
			Help: "Records acknowledged while the primary had no synchronous standby (one copy; see merch_db_synchronous_standby)."}),
	}
	recs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "merch_journal_records_total",
		Help: "Records committed by the journal, by kind."}, []string{"kind"})
	for _, k := range actors.RecordKinds {
		m.records[k] = recs.WithLabelValues(k.String())
	}
	reg.MustRegister(m.batch, m.flush, m.failures, m.fenced, m.unconfirmed, m.oneCopy, recs)
	return m
}

func (m *Journal) Committed(n int, byKind *actors.RecordCounts, d time.Duration) {
	m.batch.Observe(float64(n))
	m.flush.Observe(d.Seconds())
	for k, c := range byKind {
		if c > 0 && m.records[k] != nil {
			m.records[k].Add(float64(c))
		}
	}
}
func (m *Journal) Failed()       { m.failures.Inc() }
func (m *Journal) Fenced()       { m.fenced.Inc() }
func (m *Journal) Unconfirmed()  { m.unconfirmed.Inc() }
func (m *Journal) OneCopy(n int) { m.oneCopy.Add(float64(n)) }

// RegisterSyncStandby registers merch_db_synchronous_standby: 1 while the
// primary acknowledges commits only once a synchronous standby has them,
// 0 while it acknowledges them with one copy. synchronous runs at scrape
// time and must be cheap and safe for concurrent use.
func RegisterSyncStandby(reg prometheus.Registerer, synchronous func() bool) {
	reg.MustRegister(boolGauge("merch_db_synchronous_standby",
		"1 while commits are acknowledged only once a synchronous standby has them, 0 while with one copy.", synchronous))
}

// boolGauge is a gauge of a condition read at scrape time: 1 or 0.
func boolGauge(name, help string, cond func() bool) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
		if cond() {
			return 1
		}
		return 0
	})
}

// GaugeSources are read at scrape time. Each func must be safe for
// concurrent use.
type GaugeSources struct {
	Actors       func() actors.Stats // one scan of the directory per scrape
	JournalDepth func() int
	HashDepth    func() int64
	// The bounds the depths run into (merch_*_capacity): constants.
	JournalCapacity int
	HashCapacity    int64
}

// gauges is one collector for every value read at scrape time, so the
// actor directory is scanned once per scrape, not once per gauge.
type gauges struct {
	src                                      GaugeSources
	depth, depthMax, active, journal, hashes *prometheus.Desc
	journalCap, hashCap                      *prometheus.Desc
}

// RegisterGauges registers the scrape-time gauges: merch_actor_mailbox_depth,
// merch_actor_mailbox_depth_max, merch_actor_active,
// merch_journal_queue_depth, merch_journal_queue_capacity,
// merch_auth_hash_queue_depth and merch_auth_hash_queue_capacity.
func RegisterGauges(reg prometheus.Registerer, src GaugeSources) {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	reg.MustRegister(&gauges{src: src,
		depth:      d("merch_actor_mailbox_depth", "Messages queued in user actors' mailboxes, total."),
		depthMax:   d("merch_actor_mailbox_depth_max", "Deepest single user actor mailbox now."),
		active:     d("merch_actor_active", "Resident user actors."),
		journal:    d("merch_journal_queue_depth", "Records waiting for the journal writer."),
		journalCap: d("merch_journal_queue_capacity", "Records the journal queue holds before writes are shed (JOURNAL_QUEUE)."),
		hashes:     d("merch_auth_hash_queue_depth", "bcrypt jobs waiting or running."),
		hashCap:    d("merch_auth_hash_queue_capacity", "bcrypt jobs that can wait or run before logins are shed (2 x HASH_QUEUE + HASH_WORKERS)."),
	})
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.depth, g.depthMax, g.active, g.journal, g.journalCap, g.hashes, g.hashCap} {
		ch <- d
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	st := g.src.Actors()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	gauge(g.depth, float64(st.MailboxDepth))
	gauge(g.depthMax, float64(st.MailboxDepthMax))
	gauge(g.active, float64(st.Active))
	gauge(g.journal, float64(g.src.JournalDepth()))
	gauge(g.hashes, float64(g.src.HashDepth()))
	gauge(g.journalCap, float64(g.src.JournalCapacity))
	gauge(g.hashCap, float64(g.src.HashCapacity))
}

// RegisterBuildInfo registers merch_build_info{version,revision,goversion},
// always 1, so a query can join any series with the build that made it.
func RegisterBuildInfo(reg prometheus.Registerer, version, revision string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "merch_build_info",
		Help:        "The running binary: version, VCS revision and Go version; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()}})
	g.Set(1)
	reg.MustRegister(g)
}

// RegisterReady registers merch_ready: 1 when ready reports true (what
// /readyz would answer 200 for), else 0. ready runs at scrape time and
// must be bounded and safe for concurrent use.
func RegisterReady(reg prometheus.Registerer, ready func() bool) {
	reg.MustRegister(boolGauge("merch_ready", "1 when /readyz answers 200 (the journal can write), else 0.", ready))
}

// TokenCacheSources read the token cache's counters at scrape time.
type TokenCacheSources struct {
	Hits, Misses func() uint64
}

// RegisterTokenCache registers merch_auth_token_cache_hits_total and
// merch_auth_token_cache_misses_total (hit ratio: hits / (hits + misses)).
func RegisterTokenCache(reg prometheus.Registerer, src TokenCacheSources) {
	c := func(name, help string, f func() uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f()) }))
	}
	c("merch_auth_token_cache_hits_total", "Bearer tokens found in the verified-token cache (no JWT parse).", src.Hits)
	c("merch_auth_token_cache_misses_total", "Bearer tokens not in the cache (parsed and verified).", src.Misses)
}

// PoolStat is a snapshot of the database pool (pgxpool.Stat, copied so
// this package does not import pgx).
type PoolStat struct {
	Acquired, Idle, Total, Max int32
	Acquires, EmptyAcquires    int64
	EmptyAcquireWait           time.Duration // total time acquires waited for a free connection
}

// poolCollector reads the pool once per scrape.
type poolCollector struct {
	stat                             func() PoolStat
	acquired, idle, total, maxConns  *prometheus.Desc
	acquires, emptyAcquires, waiting *prometheus.Desc
}

// RegisterDBPool registers merch_db_pool_*: connections acquired, idle,
// total and the maximum (gauges); acquires, acquires that found the pool
// empty and the time those waited (counters). stat runs at scrape time.
func RegisterDBPool(reg prometheus.Registerer, stat func() PoolStat) {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	reg.MustRegister(&poolCollector{stat: stat,
		acquired:      d("merch_db_pool_acquired_conns", "Database connections in use now."),
		idle:          d("merch_db_pool_idle_conns", "Database connections idle in the pool now."),
		total:         d("merch_db_pool_total_conns", "Database connections open now (acquired, idle and being opened)."),
		maxConns:      d("merch_db_pool_max_conns", "The pool's bound on open connections (DB_MAX_CONNS)."),
		acquires:      d("merch_db_pool_acquires_total", "Connections acquired from the pool."),
		emptyAcquires: d("merch_db_pool_empty_acquires_total", "Acquires that found no idle connection and waited for one."),
		waiting:       d("merch_db_pool_acquire_wait_seconds_total", "Time acquires spent waiting for a connection, total."),
	})
}

func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.acquired, p.idle, p.total, p.maxConns, p.acquires, p.emptyAcquires, p.waiting} {
		ch <- d
	}
}

func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := p.stat()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(p.acquired, float64(st.Acquired))
	gauge(p.idle, float64(st.Idle))
	gauge(p.total, float64(st.Total))
	gauge(p.maxConns, float64(st.Max))
	counter(p.acquires, float64(st.Acquires))
	counter(p.emptyAcquires, float64(st.EmptyAcquires))
	counter(p.waiting, st.EmptyAcquireWait.Seconds())
}

// NewRejectedConns registers merch_http_connections_rejected_total{reason}
// and returns the function that counts one (reason "max_conns" or
// "max_conns_per_ip").
func NewRejectedConns(reg prometheus.Registerer) func(reason string) {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "merch_http_connections_rejected_total",
		Help: "Client connections refused at accept by a connection cap."}, []string{"reason"})
	reg.MustRegister(v)
	byReason := map[string]prometheus.Counter{}
	for _, r := range []string{"max_conns", "max_conns_per_ip"} {
		byReason[r] = v.WithLabelValues(r)
	}
	return func(reason string) {
		if c := byReason[reason]; c != nil {
			c.Inc()
			return
		}
		v.WithLabelValues(reason).Inc()
	}
}

// NewHashHistogram registers merch_auth_hash_seconds.
func NewHashHistogram(reg prometheus.Registerer) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "merch_auth_hash_seconds",
		Help: "Time of one bcrypt hash or comparison.", Buckets: prometheus.ExponentialBuckets(.001, 2, 14)})
	reg.MustRegister(h)
	return h
}

// NewRegistry returns a registry with the Go runtime and process
// collectors, plus the runtime's histogram of stop-the-world GC pauses
// (go_sched_pauses_total_gc_seconds), so dashboards can show a pause p99.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	pauses := collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sched/pauses/total/gc:seconds$`)}
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(pauses)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ClusterSources are a cluster node's values read at scrape time. Each
// func must be safe for concurrent use.
type ClusterSources struct {
	Owned             func() int   // shards the node answers for now
	Renewals          func() int64 // lease renewals that succeeded
	RenewFailures     func() int64
	Handoffs          func() int64            // shards handed off
	Forwards          func() map[string]int64 // forwarding attempts by result
	CreditWaitsMissed func() int64            // transfers answered before their fold was confirmed
	Pending           func() (count int64, oldest time.Duration)
}

// RegisterCluster registers merch_cluster_*.
func RegisterCluster(reg prometheus.Registerer, src ClusterSources) {
	g := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	c := func(name, help string, f func() int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f()) }))
	}
	g("merch_cluster_shards_owned", "Shards this node holds a valid lease on.", func() float64 { return float64(src.Owned()) })
	c("merch_cluster_lease_renewals_total", "Lease renewals that succeeded.", src.Renewals)
	c("merch_cluster_lease_renew_failures_total", "Lease renewals that failed.", src.RenewFailures)
	c("merch_cluster_handoffs_total", "Shards handed off to another node (drain, release).", src.Handoffs)
	for result := range src.Forwards() {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "merch_cluster_forwards_total",
			Help:        "Attempts to forward a request to the owner of its user, by result (answered, misdirected, not_sent, failed, no_owner).",
			ConstLabels: prometheus.Labels{"result": result}},
			func() float64 { return float64(src.Forwards()[result]) }))
	}
	c("merch_cluster_credit_waits_missed_total", "Transfers to another owner's user answered before its fold was confirmed.", src.CreditWaitsMissed)
	g("merch_cluster_pending_credits", "Credits written by this node's transfers or waiting for its folds (last poll).",
		func() float64 { n, _ := src.Pending(); return float64(n) })
	g("merch_cluster_pending_credit_age_seconds", "Age of the oldest pending credit of this node's shards (last poll).",
		func() float64 { _, a := src.Pending(); return a.Seconds() })
}
