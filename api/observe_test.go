package api

import (
	"merch/actors"
	"merch/metrics"
	"strings"
	"testing"
	"time"
)

// TestObserveMetrics wires the Prometheus observers into a real System and
// checks the exported series by their fixed names (dashboards and alerts use
// them), with no per-user labels.
func TestObserveMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	am := metrics.NewActors(reg)
	jm := metrics.NewJournal(reg)
	hh := metrics.NewHashHistogram(reg)
	e := mustEnv(t, envConfig{registry: reg, actorMetrics: am, noHTTPServer: true,
		observe: func(d time.Duration) { hh.Observe(d.Seconds()) }})
	metrics.RegisterGauges(reg, metrics.GaugeSources{Actors: e.sys.Stats, JournalDepth: func() int { return 7 }, HashDepth: e.hasher.QueueDepth})

	h := e.srv.Handler()
	call := func(method, path, token, body string) int {
		ctx := mustCtx(t, method, path, token, body)
		h(ctx)
		return ctx.Response.StatusCode()
	}
	if s := call("POST", "/api/auth", "", authBody("metered", "pw")); s != 200 {
		t.Fatalf("auth %d", s)
	}
	tok, err := e.tokens.Issue("metered")
	if err != nil {
		t.Fatal(err)
	}
	if s := call("GET", "/api/buy/pen", tok, ""); s != 200 {
		t.Fatalf("buy %d", s)
	}
	if s := call("GET", "/api/info", tok, ""); s != 200 {
		t.Fatalf("info %d", s)
	}
	jm.Committed(3, &actors.RecordCounts{0, 0, 1, 2}, time.Millisecond)
	jm.Failed()

	scrape := func() string {
		r := e.adminGet(t, "/metrics")
		if r.status != 200 {
			t.Fatalf("metrics %d", r.status)
		}
		return r.body
	}
	before := scrape()
	if e.sys.PassivateIdle(0) != 0 {
		t.Fatal("the idle actor was not passivated")
	}
	after := scrape()
	tests := []struct {
		name, body, line string
	}{
		{"activations", before, "merch_actor_activations_total 1"},
		{"buy messages", before, `merch_actor_messages_total{type="buy"} 1`},
		{"journal completions", before, `merch_actor_messages_total{type="committed"} 1`},
		{"info messages", before, `merch_actor_messages_total{type="info"} 1`},
		{"process latency", before, `merch_actor_process_seconds_count{type="buy"} 1`},
		{"mailbox wait", before, "merch_actor_mailbox_wait_seconds_count 3"},
		{"active actors", before, "merch_actor_active 1"},
		{"mailbox depth", before, "merch_actor_mailbox_depth 0"},
		{"journal records", before, `merch_journal_records_total{kind="purchased"} 1`},
		{"journal transfers", before, `merch_journal_records_total{kind="transferred"} 2`},
		{"journal batches", before, "merch_journal_batch_records_count 1"},
		{"journal failures", before, "merch_journal_failures_total 1"},
		{"journal queue gauge", before, "merch_journal_queue_depth 7"},
		{"hash queue gauge", before, "merch_auth_hash_queue_depth 0"},
		{"hash latency", before, "merch_auth_hash_seconds_count 1"},
		{"http requests", before, `merch_http_requests_total{code="200",route="buy"} 1`},
		{"go runtime", before, "go_goroutines "},
		{"passivations", after, "merch_actor_passivations_total 1"},
		{"active after passivation", after, "merch_actor_active 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(tt.body, tt.line) {
				t.Fatalf("metrics lack %q", tt.line)
			}
		})
	}
	if strings.Contains(after, "metered") {
		t.Fatal("a user name appears in the metrics")
	}
}
