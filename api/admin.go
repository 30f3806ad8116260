package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readyTimeout bounds one readiness check (a database ping).
const readyTimeout = time.Second

// AdminHandler serves the operational endpoints, meant for the admin
// listener (ADMIN_ADDR) and never the public one: GET /healthz (the process
// is alive), GET /readyz (200 when ready reports nil, else 503 with
// Retry-After), GET /metrics (reg, Prometheus text format) and the Go
// profiler under /debug/pprof/. They stay off the public listener because
// /metrics costs ~35 API requests and shows business counters, and pprof
// can cost seconds of CPU.
// extra adds handlers by pattern (a cluster node's /debug/actors).
func AdminHandler(reg *prometheus.Registry, ready func(context.Context) error, extra map[string]http.HandlerFunc) http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range extra {
		mux.HandleFunc(pattern, h)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(okBody)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if err := ready(ctx); err != nil {
			w.Header().Set("Retry-After", string(retryAfterDefault))
			w.WriteHeader(http.StatusServiceUnavailable)
			body := notReadyBody
			if errors.Is(err, ErrNoSyncStandby) {
				body = noStandbyBody
			}
			_, _ = w.Write(body)
			return
		}
		_, _ = w.Write(okBody)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// ErrNoSyncStandby is what a ready func reports when it was told to
// require a synchronous standby (REQUIRE_SYNC_STANDBY) and the primary has
// none: commits would be acknowledged with one copy. /readyz says so.
var ErrNoSyncStandby = errors.New("no synchronous standby: commits would be acknowledged with one copy")

var (
	okBody        = []byte(`{"status":"ok"}`)
	notReadyBody  = errorBody("not ready: database writes unavailable")
	noStandbyBody = errorBody("not ready: " + ErrNoSyncStandby.Error())
)
