package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"merch/actors"
)

// TestGaugesScanOnce: one scrape reads the actor directory once, however
// many gauges come from it, and reports what the sources say.
func TestGaugesScanOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	scans := 0
	RegisterGauges(reg, GaugeSources{
		Actors:       func() actors.Stats { scans++; return actors.Stats{MailboxDepth: 5, MailboxDepthMax: 3, Active: 7} },
		JournalDepth: func() int { return 11 },
		HashDepth:    func() int64 { return 2 },
	})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if scans != 1 {
		t.Fatalf("%d directory scans for one scrape, want 1", scans)
	}
	want := map[string]float64{"merch_actor_mailbox_depth": 5, "merch_actor_mailbox_depth_max": 3,
		"merch_actors_active": 7, "merch_journal_queue_depth": 11, "merch_auth_hash_queue_depth": 2}
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
