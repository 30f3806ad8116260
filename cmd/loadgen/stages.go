package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// A profile is the load over the load phase (warm-up included) as a
// function of the time since it started: the closed model's number of
// active workers, or the open model's arrivals per second. It is built
// from stages, each moving the target linearly from the previous stage's
// target (0 before the first) to its own over its duration; a 0s stage is
// a jump. A run without -stages has a constant profile (-c workers, or
// -rate arrivals per second).
type profile struct {
	rate   bool // targets are arrivals per second (open model), else workers
	stages []stage
	spec   string // as given, for the report; empty for a constant profile
	total  time.Duration
}

// stage is one piece of a profile, with the values derived at parse time.
type stage struct {
	from, to float64
	start    time.Duration // offset of the stage in the load phase
	dur      time.Duration
	arrivals float64 // open model: cumulative arrivals before this stage
}

// Limits of a stage target: enough for any loopback run, small enough
// that a typo does not start a million goroutines.
const (
	stageWorkersMax = 100_000
	stageRateMax    = 10_000_000
	stagesMax       = 100
)

// parseStages parses "10s:100,30s:400,10s:0" (workers) or
// "10s:100/s,30s:400/s" (arrivals per second). Every target must use the
// same unit.
func parseStages(spec string) (*profile, error) {
	p := &profile{spec: spec}
	for i, part := range strings.Split(spec, ",") {
		d, target, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, fmt.Errorf("stage %q: want DURATION:TARGET (e.g. 30s:400 workers or 30s:400/s arrivals)", part)
		}
		dur, err := time.ParseDuration(d)
		if err != nil || dur < 0 {
			return nil, fmt.Errorf("stage %q: bad duration", part)
		}
		num, isRate := strings.CutSuffix(target, "/s")
		if i > 0 && isRate != p.rate {
			return nil, fmt.Errorf("stage %q: mixes workers and arrivals per second (/s): use one unit for every stage", part)
		}
		p.rate = isRate
		v, err := strconv.ParseFloat(num, 64)
		switch {
		case err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v):
			return nil, fmt.Errorf("stage %q: target must be a number >= 0", part)
		case !isRate && v != math.Trunc(v):
			return nil, fmt.Errorf("stage %q: a number of workers must be a whole number (add /s for arrivals per second)", part)
		case !isRate && v > stageWorkersMax, isRate && v > stageRateMax:
			return nil, fmt.Errorf("stage %q: target too large", part)
		}
		p.add(dur, v)
	}
	switch {
	case len(p.stages) > stagesMax:
		return nil, fmt.Errorf("-stages: at most %d stages", stagesMax)
	case p.total <= 0:
		return nil, errors.New("-stages: the stages must last more than 0s in total")
	case p.peak() == 0:
		return nil, errors.New("-stages: every target is 0")
	}
	return p, nil
}

// constProfile holds v for the whole load phase.
func constProfile(rate bool, v float64, total time.Duration) *profile {
	p := &profile{rate: rate}
	p.add(0, v)
	p.add(total, v)
	return p
}

func (p *profile) add(dur time.Duration, to float64) {
	s := stage{to: to, start: p.total, dur: dur}
	if n := len(p.stages); n > 0 {
		last := &p.stages[n-1]
		s.from = last.to
		s.arrivals = last.arrivals + (last.from+last.to)/2*last.dur.Seconds()
	}
	p.stages = append(p.stages, s)
	p.total += dur
}

// peak is the largest target: the worker pool the closed model needs.
func (p *profile) peak() float64 {
	m := 0.0
	for _, s := range p.stages {
		m = max(m, s.to)
	}
	return m
}

// at is the target at offset t into the load phase (the last target
// after the end).
func (p *profile) at(t time.Duration) float64 {
	for _, s := range p.stages {
		if t < s.start+s.dur {
			if t < s.start {
				return s.from
			}
			return s.from + (s.to-s.from)*float64(t-s.start)/float64(s.dur)
		}
	}
	return p.stages[len(p.stages)-1].to
}

// workers is the closed model's number of active workers at offset t.
func (p *profile) workers(t time.Duration) int { return int(math.Round(p.at(t))) }

// arrivalAt is the offset of arrival n (0, 1, 2, ...) of the open model:
// the time at which the integral of the rate reaches n, solved exactly
// within the stage. ok is false when the profile ends before it.
func (p *profile) arrivalAt(n float64) (time.Duration, bool) {
	for _, s := range p.stages {
		d := s.dur.Seconds()
		if n >= s.arrivals+(s.from+s.to)/2*d {
			continue // not in this stage (or the stage has none)
		}
		// Rate r(x) = from + (to-from)x/d; arrivals by x: from·x + a·x²
		// with a = (to-from)/2d. The root written as 2m/(b+√(b²+4am))
		// stays exact for a = 0 and a < 0.
		m := n - s.arrivals
		a := (s.to - s.from) / (2 * d)
		den := s.from + math.Sqrt(max(s.from*s.from+4*a*m, 0))
		x := 0.0
		if den > 0 {
			x = 2 * m / den
		}
		return s.start + min(time.Duration(x*float64(time.Second)), s.dur), true
	}
	return 0, false
}

// describe renders the target at offset t for the progress line.
func (p *profile) describe(t time.Duration) string {
	if p.rate {
		return strconv.FormatFloat(p.at(t), 'f', 0, 64) + "/s"
	}
	return strconv.Itoa(p.workers(t)) + " workers"
}

// active reports whether worker id (0-based) works at offset t: the
// target, rounded, exceeds id.
func (p *profile) active(id int, t time.Duration) bool { return p.at(t) >= float64(id)+0.5 }

// reaches returns the earliest offset >= t at which the target is at
// least v; false if it never is again.
func (p *profile) reaches(t time.Duration, v float64) (time.Duration, bool) {
	if p.at(t) >= v {
		return t, true
	}
	for _, s := range p.stages {
		if s.start+s.dur <= t || s.to < v {
			continue
		}
		// Below v at t and at least v at the stage's end: it crosses here,
		// rising (from < v <= to), or jumps if the stage takes no time.
		if s.dur == 0 {
			return s.start, true
		}
		x := s.start + time.Duration(float64(s.dur)*(v-s.from)/(s.to-s.from))
		return max(x, t), true
	}
	return 0, false
}
