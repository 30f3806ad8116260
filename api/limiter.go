package api

import (
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// Limiter slows password guessing without letting a guesser lock the
// rightful user out:
//
//   - Wrong passwords are counted per (name, client address) over Window
//     (counted from the first failure). After FailuresMax of them, that
//     address gets 429 for that name until the window ends.
//   - They are also counted per name over all addresses. Past
//     NameFailuresMax, an address that already failed for that name in the
//     window gets 429 for it: a guesser with many addresses gets one guess
//     per address per window. An address with no failures for the name is
//     never refused, so the rightful user logs in from their own address
//     whatever a guesser elsewhere does.
//
// IPv6 addresses count by their /64 prefix (one host usually holds a whole
// /64). Bounded: at most namesMax names and namesMax pairs are tracked; the
// least valuable entries are evicted first. Safe for concurrent use.
type Limiter struct {
	pairMax, nameMax int32
	pairs, names     *otter.Cache[string, *failures]
	window           time.Duration
}

type failures struct{ n atomic.Int32 }

// LimiterConfig builds a Limiter; every field is required.
type LimiterConfig struct {
	FailuresMax     int // per (name, address) per window
	NameFailuresMax int // per name per window, all addresses
	Window          time.Duration
	NamesMax        int
}

// NewLimiter returns a Limiter.
func NewLimiter(cfg LimiterConfig) (*Limiter, error) {
	if cfg.FailuresMax < 1 || cfg.NameFailuresMax < cfg.FailuresMax || cfg.Window <= 0 || cfg.NamesMax < 1 {
		return nil, errors.New("api: bad limiter configuration")
	}
	newCache := func() (*otter.Cache[string, *failures], error) {
		return otter.New(&otter.Options[string, *failures]{
			MaximumSize:      cfg.NamesMax,
			ExpiryCalculator: otter.ExpiryCreating[string, *failures](cfg.Window),
		})
	}
	pairs, err := newCache()
	if err != nil {
		return nil, err
	}
	names, err := newCache()
	if err != nil {
		return nil, err
	}
	return &Limiter{pairMax: int32(cfg.FailuresMax), nameMax: int32(cfg.NameFailuresMax),
		pairs: pairs, names: names, window: cfg.Window}, nil
}

// Window returns the counting window (the longest a 429 lasts).
func (l *Limiter) Window() time.Duration { return l.window }

// Check returns errTooManyTries while user is locked for addr.
func (l *Limiter) Check(user string, addr net.IP) error {
	pair := l.count(l.pairs, pairKey(user, addr))
	if pair >= l.pairMax || (pair > 0 && l.count(l.names, user) >= l.nameMax) {
		return errTooManyTries
	}
	return nil
}

// Fail counts a wrong password and returns the error to answer with.
func (l *Limiter) Fail(user string, addr net.IP) error {
	pair := l.add(l.pairs, pairKey(user, addr))
	name := l.add(l.names, user)
	if pair > l.pairMax || (pair > 1 && name > l.nameMax) {
		return errTooManyTries
	}
	return errWrongPassword
}

func (l *Limiter) count(c *otter.Cache[string, *failures], key string) int32 {
	if f, ok := c.GetIfPresent(key); ok {
		return f.n.Load()
	}
	return 0
}

func (l *Limiter) add(c *otter.Cache[string, *failures], key string) int32 {
	f, _ := c.ComputeIfAbsent(key, func() (*failures, bool) { return new(failures), false })
	return f.n.Add(1)
}

// pairKey is name, a NUL (never in a valid name) and the address bytes.
func pairKey(user string, addr net.IP) string {
	return user + "\x00" + string(addrKey(addr))
}

// addrKey returns the bytes an address is counted by: IPv4 whole, IPv6 by
// its /64.
func addrKey(ip net.IP) []byte {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	if len(ip) == net.IPv6len {
		return ip[:8]
	}
	return ip
}
