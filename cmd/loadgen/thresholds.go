package main

import (
	"fmt"
	"strconv"
	"time"
)

// thresholds are the pass/fail criteria of a run, checked on the measured
// total after it: a violation exits 3 with one line per failed criterion.
type thresholds struct {
	MaxP99       time.Duration // 0: not checked
	MaxErrorRate float64       // errors / requests; checked when ErrorRateSet
	ErrorRateSet bool
}

func (t thresholds) any() bool { return t.MaxP99 > 0 || t.ErrorRateSet }

// thresholdReport is the report's "thresholds" object (absent without
// thresholds): what was asked, and the failures (empty when passed).
type thresholdReport struct {
	MaxP99us     *uint64  `json:"max_p99_us,omitempty"`
	MaxErrorRate *float64 `json:"max_error_rate,omitempty"`
	P99us        uint64   `json:"p99_us"`
	ErrorRate    float64  `json:"error_rate"`
	Passed       bool     `json:"passed"`
	Failures     []string `json:"failures"`
}

// check evaluates the thresholds on the total. Expected 400s
// (insufficient funds) are not errors; missed arrivals are neither
// requests nor errors. A run with no measured request fails any
// threshold: it proves nothing about the service.
func (t thresholds) check(total EpReport) *thresholdReport {
	if !t.any() {
		return nil
	}
	r := &thresholdReport{P99us: total.Latency.P99, Failures: []string{}}
	if total.Count > 0 {
		r.ErrorRate = float64(total.Errors) / float64(total.Count)
	} else {
		r.Failures = append(r.Failures, "no measured requests")
	}
	if t.MaxP99 > 0 {
		us := uint64(t.MaxP99 / time.Microsecond)
		r.MaxP99us = &us
		if total.Count > 0 && total.Latency.P99 > us {
			r.Failures = append(r.Failures, fmt.Sprintf("p99 %s > -max-p99 %s", ms(total.Latency.P99), t.MaxP99))
		}
	}
	if t.ErrorRateSet {
		r.MaxErrorRate = &t.MaxErrorRate
		if total.Count > 0 && r.ErrorRate > t.MaxErrorRate {
			r.Failures = append(r.Failures, fmt.Sprintf("error rate %.4g (%d of %d) > -max-error-rate %g",
				r.ErrorRate, total.Errors, total.Count, t.MaxErrorRate))
		}
	}
	r.Passed = len(r.Failures) == 0
	return r
}

// summary is the one line printed after the report.
func (r *thresholdReport) summary() string {
	if r.Passed {
		s := "thresholds passed: p99 " + ms(r.P99us)
		if r.MaxP99us != nil {
			s += " <= " + ms(*r.MaxP99us)
		}
		if r.MaxErrorRate != nil {
			s += ", error rate " + strconv.FormatFloat(r.ErrorRate, 'g', 4, 64) + " <= " + strconv.FormatFloat(*r.MaxErrorRate, 'g', -1, 64)
		}
		return s
	}
	s := "FAIL: thresholds violated:"
	for i, f := range r.Failures {
		if i > 0 {
			s += ";"
		}
		s += " " + f
	}
	return s
}

func ms(us uint64) string { return strconv.FormatFloat(float64(us)/1000, 'f', 2, 64) + "ms" }
