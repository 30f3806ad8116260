package api

import (
	"errors"
	"math"
	"net"
	"time"

	"github.com/maypok86/otter/v2"
	"golang.org/x/time/rate"
)

// errRegisterRate: too many new names from one client address.
var errRegisterRate = errors.New("too many registrations from this address; try again later")

// Registrations rate-limits the creation of new users per client address
// (a token bucket per address, IPv6 by /64): a flood of new names costs
// bcrypt time and database rows, so one address may only register Rate per
// second, in bursts of Burst. Logins of existing users are not counted.
// Bounded: at most addrsMax addresses are tracked; an address idle long
// enough to refill its bucket is forgotten (a new bucket starts full, so
// forgetting changes nothing). Safe for concurrent use. A nil
// *Registrations allows everything.
type Registrations struct {
	rate  rate.Limit
	burst int
	cache *otter.Cache[string, *rate.Limiter]
}

// NewRegistrations allows perSecond registrations per address with bursts
// of burst; perSecond 0 turns the limit off (nil, nil).
func NewRegistrations(perSecond float64, burst, addrsMax int) (*Registrations, error) {
	if perSecond == 0 {
		return nil, nil
	}
	if perSecond < 0 || math.IsInf(perSecond, 0) || math.IsNaN(perSecond) || burst < 1 || addrsMax < 1 {
		return nil, errors.New("api: bad registration limit")
	}
	refill := time.Duration(float64(burst) / perSecond * float64(time.Second))
	c, err := otter.New(&otter.Options[string, *rate.Limiter]{
		MaximumSize:      addrsMax,
		ExpiryCalculator: otter.ExpiryAccessing[string, *rate.Limiter](max(refill, time.Second)),
	})
	if err != nil {
		return nil, err
	}
	return &Registrations{rate: rate.Limit(perSecond), burst: burst, cache: c}, nil
}

// Allow takes one registration for addr, or returns errRegisterRate.
func (r *Registrations) Allow(addr net.IP) error {
	if r == nil {
		return nil
	}
	l, _ := r.cache.ComputeIfAbsent(string(addrKey(addr)), func() (*rate.Limiter, bool) {
		return rate.NewLimiter(r.rate, r.burst), false
	})
	if !l.Allow() {
		return errRegisterRate
	}
	return nil
}
