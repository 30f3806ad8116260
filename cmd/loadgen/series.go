package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// seriesWriter writes the -series file: one row per progress interval of
// the measured window, by completion time, and a last partial row at the
// end, so the rows add up to the report's total count and errors. It is
// used by the progress goroutine only (close after it has stopped).
//
// CSV (a .csv name) has a header line; any other name gets JSON lines, one
// object per row with the same fields:
//
//	t_s         end of the interval, seconds since the load phase started
//	interval_s  length of the interval
//	target      the load asked for at t_s: workers (closed model) or
//	            arrivals per second (open model)
//	requests    measured requests finished in the interval
//	errors      of which errors (timeouts, connection errors, non-2xx other than expected 400)
//	rps         requests / interval_s
//	p50_ms, p99_ms  latency of the interval's requests
//	missed      open model: arrivals dropped because no worker was free
type seriesWriter struct {
	f     *os.File
	w     *bufio.Writer
	csv   bool
	every time.Duration // the row interval
	prev  cumulative
	last  time.Time // end of the previous row's interval
	err   error
}

// seriesRow is one row; the JSON names are the CSV header.
type seriesRow struct {
	TS        float64 `json:"t_s"`
	IntervalS float64 `json:"interval_s"`
	Target    float64 `json:"target"`
	Requests  uint64  `json:"requests"`
	Errors    uint64  `json:"errors"`
	RPS       float64 `json:"rps"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	Missed    uint64  `json:"missed"`
}

const seriesHeader = "t_s,interval_s,target,requests,errors,rps,p50_ms,p99_ms,missed\n"

// seriesFormat tells CSV from JSON lines by the file's extension.
func seriesFormat(path string) (csv bool, err error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return true, nil
	case ".json", ".jsonl", ".ndjson":
		return false, nil
	}
	return false, fmt.Errorf("-series %q: name it .csv (CSV) or .jsonl/.json/.ndjson (JSON lines)", path)
}

// createSeries opens path for writing; "" returns a nil writer, whose
// methods do nothing.
func createSeries(path string, every time.Duration) (*seriesWriter, error) {
	if path == "" {
		return nil, nil
	}
	csv, err := seriesFormat(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	s := &seriesWriter{f: f, w: bufio.NewWriter(f), csv: csv, every: every, prev: cumulative{hist: newHistSnap()}}
	if csv {
		_, s.err = s.w.WriteString(seriesHeader)
	}
	return s, nil
}

// row writes the interval that ends now, if it overlaps the measured
// window, and flushes it (so the file can be followed during a run). A
// sliver of the window (the tick that ends the warm-up) joins the next
// row; a final sliver is written only if requests finished in it.
func (s *seriesWriter) row(rec *recorder, ph *phase, prof *profile, final bool) {
	if s == nil || s.err != nil {
		return
	}
	now := time.Now() // not the tick's time: the counters are read now
	from := s.last
	if from.Before(ph.measureFrom) {
		from = ph.measureFrom
	}
	sliver := now.Sub(from) < s.every/2
	if !now.After(from) || (sliver && !final) {
		return
	}
	cur := rec.cumulative()
	if sliver && cur.count == s.prev.count && cur.missed == s.prev.missed {
		return
	}
	r := seriesRow{
		TS: now.Sub(ph.start).Seconds(), IntervalS: now.Sub(from).Seconds(),
		Requests: cur.count - s.prev.count, Errors: cur.errs - s.prev.errs, Missed: cur.missed - s.prev.missed,
	}
	r.Target = prof.at(now.Sub(ph.start))
	if r.IntervalS > 0 {
		r.RPS = float64(r.Requests) / r.IntervalS
	}
	d := cur.hist.minus(s.prev.hist)
	r.P50ms, r.P99ms = float64(d.percentile(0.50))/1000, float64(d.percentile(0.99))/1000
	s.prev, s.last = cur, now
	s.err = s.write(&r)
}

func (s *seriesWriter) write(r *seriesRow) error {
	if !s.csv {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		// bufio keeps a write error for Flush to return.
		_, _ = s.w.Write(b)
		_ = s.w.WriteByte('\n')
		return s.w.Flush()
	}
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	fields := []string{
		f(r.TS, 6), f(r.IntervalS, 6), f(r.Target, 1), strconv.FormatUint(r.Requests, 10),
		strconv.FormatUint(r.Errors, 10), f(r.RPS, 1), f(r.P50ms, 3), f(r.P99ms, 3), strconv.FormatUint(r.Missed, 10),
	}
	_, _ = s.w.WriteString(strings.Join(fields, ","))
	_ = s.w.WriteByte('\n')
	return s.w.Flush()
}

// close flushes and closes the file and returns the first error; it is
// safe to call twice.
func (s *seriesWriter) close() error {
	if s == nil || s.f == nil {
		if s == nil {
			return nil
		}
		return s.err
	}
	err := errors.Join(s.err, s.w.Flush(), s.f.Close())
	s.f, s.err = nil, err
	return err
}

// cumulative is the recorder's running totals over every endpoint.
type cumulative struct {
	hist                *histSnap
	count, errs, missed uint64
}

// cumulative merges all shards; safe while workers record.
func (r *recorder) cumulative() cumulative {
	c := cumulative{hist: newHistSnap()}
	for i := range r.shards {
		for o := range r.shards[i].ep {
			e := &r.shards[i].ep[o]
			c.count += e.count.Load()
			c.errs += e.httpErr.Load() + e.timeouts.Load() + e.connErr.Load()
			c.hist.add(&e.lat)
		}
	}
	for o := range r.missed {
		c.missed += r.missed[o].Load()
	}
	return c
}

// minus returns the values recorded since prev (an earlier snapshot of
// the same histograms). The maximum is not known per interval: the
// running maximum only clamps the top bucket.
func (s *histSnap) minus(prev *histSnap) *histSnap {
	d := newHistSnap()
	for i, c := range s.counts {
		d.counts[i] = c - prev.counts[i]
		d.total += d.counts[i]
	}
	d.sum, d.max = s.sum-prev.sum, s.max
	return d
}
