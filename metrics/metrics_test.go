package metrics

import (
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"merch/actors"
)

// TestGaugesScanOnce: one scrape reads the actor directory once, however
// many gauges come from it, and reports what the sources say.
func TestGaugesScanOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	scans := 0
	RegisterGauges(reg, GaugeSources{
		Actors:          func() actors.Stats { scans++; return actors.Stats{MailboxDepth: 5, MailboxDepthMax: 3, Active: 7} },
		JournalDepth:    func() int { return 11 },
		HashDepth:       func() int64 { return 2 },
		JournalCapacity: 4096, HashCapacity: 130,
	})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if scans != 1 {
		t.Fatalf("%d directory scans for one scrape, want 1", scans)
	}
	want := map[string]float64{"merch_actor_mailbox_depth": 5, "merch_actor_mailbox_depth_max": 3,
		"merch_actor_active": 7, "merch_journal_queue_depth": 11, "merch_auth_hash_queue_depth": 2,
		"merch_journal_queue_capacity": 4096, "merch_auth_hash_queue_capacity": 130}
	for _, f := range families {
		if v, ok := want[f.GetName()]; ok {
			if got := f.GetMetric()[0].GetGauge().GetValue(); got != v {
				t.Errorf("%s = %v, want %v", f.GetName(), got, v)
			}
			delete(want, f.GetName())
		}
	}
	if len(want) != 0 {
		t.Fatalf("missing gauges: %v", want)
	}
}

// TestKeyReplayedByOutcome: a replay, a conflict (422) and a duplicate in
// flight (409) are counted apart.
func TestKeyReplayedByOutcome(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewActors(reg)
	m.KeyReplayed(nil)
	m.KeyReplayed(actors.ErrInsufficientCoins) // a remembered refusal is a replay too
	m.KeyReplayed(actors.ErrKeyReused)
	m.KeyReplayed(actors.ErrKeyInFlight)
	m.KeyReplayed(actors.ErrKeyInFlight)
	m.Panicked()
	want := map[string]float64{"merch_idempotency_replays_total": 2, "merch_idempotency_conflicts_total": 1,
		"merch_idempotency_in_flight_total": 2, "merch_actor_panics_total": 1, "merch_actor_passivations_total": 0}
	mustGather(t, reg, want)
}

// TestDBPoolAndBuildInfo: the pool collector reports the snapshot it is
// given; merch_build_info is 1 with its labels.
func TestDBPoolAndBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	RegisterDBPool(reg, func() PoolStat {
		return PoolStat{Acquired: 3, Idle: 2, Total: 5, Max: 16, Acquires: 40, EmptyAcquires: 7, EmptyAcquireWait: 1500 * time.Millisecond}
	})
	RegisterBuildInfo(reg, "v1.2.3", "abc")
	ready := false
	RegisterReady(reg, func() bool { return ready })
	RegisterTokenCache(reg, TokenCacheSources{Hits: func() uint64 { return 9 }, Misses: func() uint64 { return 1 }})
	mustGather(t, reg, map[string]float64{"merch_db_pool_acquired_conns": 3, "merch_db_pool_idle_conns": 2,
		"merch_db_pool_total_conns": 5, "merch_db_pool_max_conns": 16, "merch_db_pool_acquires_total": 40,
		"merch_db_pool_empty_acquires_total": 7, "merch_db_pool_acquire_wait_seconds_total": 1.5,
		"merch_build_info": 1, "merch_ready": 0,
		"merch_auth_token_cache_hits_total": 9, "merch_auth_token_cache_misses_total": 1})
	ready = true
	mustGather(t, reg, map[string]float64{"merch_ready": 1})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "merch_build_info" {
			continue
		}
		labels := map[string]string{}
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != "v1.2.3" || labels["revision"] != "abc" || labels["goversion"] != runtime.Version() {
			t.Errorf("merch_build_info labels %v", labels)
		}
	}
}

// mustGather checks that each named family has one sample with the value
// want gives (a counter's or a gauge's).
func mustGather(tb testing.TB, reg *prometheus.Registry, want map[string]float64) {
	tb.Helper()
	families, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		v, ok := want[f.GetName()]
		if !ok {
			continue
		}
		seen[f.GetName()] = true
		m := f.GetMetric()[0]
		got := m.GetGauge().GetValue() + m.GetCounter().GetValue()
		if got != v {
			tb.Errorf("%s = %v, want %v", f.GetName(), got, v)
		}
	}
	for name := range want {
		if !seen[name] {
			tb.Errorf("%s missing", name)
		}
	}
}
