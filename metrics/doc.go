// Package metrics holds the Prometheus implementations of the observers
// the other packages declare (actors.Metrics, persist.JournalMetrics by its
// method set), the scrape-time gauges, and the registry with the Go runtime
// and process collectors. Metric names are fixed: dashboards and alerts use
// them. No per-user labels anywhere; label children are resolved once, at
// construction. HTTP metrics stay in package api, beside the handlers they
// time. metrics imports actors and Prometheus only.
package metrics
