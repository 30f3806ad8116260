// Package listener wraps the HTTP server's net.Listener so that running out
// of resources degrades service instead of ending it, and so that the number
// of open connections is capped.
//
// It exists for two reasons. First, fasthttp's accept loop treats every
// Accept error other than a timeout as permanent: when idle clients exhaust
// the file descriptor limit, EMFILE makes Server.Serve return and the process
// shut down. A Listener never returns such an error; like net/http it calls
// OnAcceptError, backs off (5 ms doubling to 1 s, reset by a successful
// accept, cut short by Close) and tries again. The only error Accept returns
// is one matching net.ErrClosed, once the listener is closed. Its text
// contains "use of closed network connection", which fasthttp matches by
// string to make Serve return nil after Shutdown.
//
// Second, it caps connections. A connection is counted from the moment it is
// accepted until the first call of its Close, both in total and per client IP
// (the address of RemoteAddr, port ignored; connections whose peer has no IP
// are counted only in total). The per-IP table keeps only addresses with open
// connections. A connection that would exceed MaxConns or MaxConnsPerIP is
// never returned by Accept. Its client receives a complete HTTP/1.1 response,
// 503 for the total cap and 429 for the per-IP cap, with a JSON error body,
// "Retry-After: 1" and "Connection: close", and the connection is closed.
// That answer is written by a bounded set of goroutines, so a flood cannot
// stall the accept loop; when they are all busy the connection is closed
// without an answer.
//
// Wrap the plain TCP listener, below any TLS layer: the rejection response is
// written in clear text, and fasthttp recognises TLS by asserting on the
// accepted conn, which this package's wrapper would hide.
//
// Admitted connections embed the accepted net.Conn and override only Close.
// fasthttp v1.78.0 asserts on accepted conns for keepAliveConn (only when
// Server.TCPKeepalive is set), tlsConn (IsTLS, NextProto) and concrete
// *net.TCPConn types (writev of large responses, sendfile of files); behind
// the wrapper these fall back to ordinary buffered writes, which is correct
// and only slower for bodies larger than the write buffer.
package listener

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons passed to Config.OnReject.
const (
	ReasonMaxConns      = "max_conns"
	ReasonMaxConnsPerIP = "max_conns_per_ip"
)

const (
	// minBackoff is the first pause after a failed Accept: short enough that a
	// momentary shortage barely delays clients, long enough not to spin.
	minBackoff = 5 * time.Millisecond
	// maxBackoff caps the pause, as net/http does, so that freed descriptors
	// are put to use within a second.
	maxBackoff = time.Second
	// maxRejecters bounds the goroutines answering rejected clients; each holds
	// a descriptor for up to rejectTimeout, so a flood costs at most this many.
	maxRejecters = 64
	// rejectTimeout bounds the whole exchange with a rejected client, so a
	// client that neither reads nor closes cannot hold a rejecter for longer.
	rejectTimeout = time.Second
	// drainLimit is how much of a rejected client's request is read and
	// discarded: enough for a request head, little enough to cost nothing.
	drainLimit = 4 << 10
)

// errClosed is returned by Accept once Close has been called and the wrapped
// listener's own error does not say so.
var errClosed = fmt.Errorf("listener: %w", net.ErrClosed)

// Config sets the caps and callbacks of a Listener. Zero values mean "no
// limit"; every callback may be nil.
type Config struct {
	// MaxConns caps the connections open at once; above it new connections
	// are rejected with 503.
	MaxConns int
	// MaxConnsPerIP caps the connections open at once from one client IP;
	// above it new connections from that IP are rejected with 429.
	MaxConnsPerIP int
	// OnReject is called once per rejected connection with ReasonMaxConns or
	// ReasonMaxConnsPerIP, for metrics. It runs on the accept goroutine.
	OnReject func(reason string)
	// OnAcceptError is called for each Accept error that is retried, with
	// the pause before the retry. The caller rate-limits its logging.
	OnAcceptError func(err error, backoff time.Duration)
}

// Listener is a net.Listener that retries failed accepts and caps open
// connections. It is safe for concurrent use.
type Listener struct {
	inner     net.Listener
	cfg       Config
	done      chan struct{} // Closed by Close, to end backoff pauses.
	closeOnce sync.Once
	closeErr  error
	rejecters chan struct{} // Semaphore of rejecter goroutines.
	rejected  atomic.Uint64

	// rejectTimeout is a field only so tests can lengthen it.
	rejectTimeout time.Duration

	mu    sync.Mutex
	open  int
	perIP map[netip.Addr]int // Only addresses with open connections.
}

// New wraps ln with the caps and callbacks of cfg.
func New(ln net.Listener, cfg Config) *Listener {
	return &Listener{
		inner:         ln,
		cfg:           cfg,
		done:          make(chan struct{}),
		rejecters:     make(chan struct{}, maxRejecters),
		rejectTimeout: rejectTimeout,
		perIP:         make(map[netip.Addr]int),
	}
}

// Accept returns the next admitted connection. Errors of the wrapped
// listener are retried after a pause; the only error returned matches
// net.ErrClosed and means the listener is closed.
func (l *Listener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			if l.isClosed() {
				return nil, errClosed
			}
			backoff = nextBackoff(backoff)
			if l.cfg.OnAcceptError != nil {
				l.cfg.OnAcceptError(err, backoff)
			}
			if !l.pause(backoff) {
				return nil, errClosed
			}
			continue
		}
		backoff = 0
		if ac := l.admit(c); ac != nil {
			return ac, nil
		}
	}
}

// Close closes the wrapped listener and ends any backoff pause. Admitted
// connections stay open; rejecters finish within their timeout.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.inner.Close()
	})
	return l.closeErr
}

// Addr returns the wrapped listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Open returns the number of admitted connections not yet closed.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Rejected returns the number of connections rejected so far.
func (l *Listener) Rejected() uint64 { return l.rejected.Load() }

func (l *Listener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// pause waits for d and reports false if Close ended the wait early.
func (l *Listener) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return minBackoff
	}
	return min(2*d, maxBackoff)
}
