package api

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// Limiter slows brute force: after FailuresMax wrong passwords for one
// username within Window (counted from the first failure), every login
// attempt for that name gets 429 until the window ends. The rightful user is
// locked out for at most Window. Bounded: at most namesMax names are
// tracked; the least valuable entries are evicted first. Safe for concurrent
// use.
type Limiter struct {
	max   int32
	cache *otter.Cache[string, *failures]
}

type failures struct{ n atomic.Int32 }

// NewLimiter allows failuresMax failures per name per window, tracking at
// most namesMax names.
func NewLimiter(failuresMax int, window time.Duration, namesMax int) (*Limiter, error) {
	if failuresMax < 1 || window <= 0 || namesMax < 1 {
		return nil, errors.New("api: bad limiter configuration")
	}
	c, err := otter.New(&otter.Options[string, *failures]{
		MaximumSize:      namesMax,
		ExpiryCalculator: otter.ExpiryCreating[string, *failures](window),
	})
	if err != nil {
		return nil, err
	}
	return &Limiter{max: int32(failuresMax), cache: c}, nil
}

// Check returns errTooManyTries while user is locked.
func (l *Limiter) Check(user string) error {
	if f, ok := l.cache.GetIfPresent(user); ok && f.n.Load() >= l.max {
		return errTooManyTries
	}
	return nil
}

// Fail counts a wrong password and returns the error to answer with.
func (l *Limiter) Fail(user string) error {
	f, _ := l.cache.ComputeIfAbsent(user, func() (*failures, bool) { return new(failures), false })
	if f.n.Add(1) > l.max {
		return errTooManyTries
	}
	return errWrongPassword
}
