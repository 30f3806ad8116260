package relay

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Relay forwards every accepted connection to a target address.
type Relay struct {
	ln     *net.TCPListener
	target string
	ctx    context.Context // Cancelled by Close, so dials in progress give up.
	cancel context.CancelFunc
	wg     sync.WaitGroup // The accept loop and every connection's run.
	delay  atomic.Int64   // A time.Duration, applied to chunks as they are read.

	mu       sync.Mutex // Guards the fields below; taken before any Conn.mu.
	held     bool
	closed   bool
	conns    []*Conn
	onAccept func(*Conn)
}

// Start listens on 127.0.0.1:0 and forwards every accepted connection to
// target (host:port).
func Start(target string) (*Relay, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{ln: ln, target: target, ctx: ctx, cancel: cancel}
	r.wg.Go(r.acceptLoop)
	return r, nil
}

// Addr returns the host:port that clients dial.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Close stops listening, closes both sides of every connection, dropping
// buffered bytes, and waits for all of the relay's goroutines.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait()
		return nil
	}
	r.closed = true
	conns := slices.Clone(r.conns)
	r.mu.Unlock()

	err := r.ln.Close()
	r.cancel()
	for _, c := range conns {
		c.kill(false)
	}
	r.wg.Wait()
	return err
}

// Hold partitions the network: every current and future connection stops
// delivering bytes in both directions and buffers them instead. New
// connections are accepted, but they dial the target only when released.
func (r *Relay) Hold() { r.setHeld(true) }

// Release heals the partition: every connection delivers its buffered bytes
// in order and then passes normally, including connections held on their own.
// Future connections pass too.
func (r *Relay) Release() { r.setHeld(false) }

func (r *Relay) setHeld(held bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = held
	for _, c := range r.conns {
		c.setHeld(held)
	}
}

// Reset sends RST on both sides of every current connection and drops their
// buffered bytes. It also leaves Hold mode, so future connections pass.
func (r *Relay) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = false
	for _, c := range r.conns {
		c.kill(true)
	}
}

// SetDelay makes every chunk read from now on, in both directions, wait d
// before it is written; 0 means no delay. Order is preserved, so a chunk
// never overtakes one read before it, even one with a longer delay.
func (r *Relay) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

// Conns returns every connection in accept order, closed ones included, so
// that tests can index them by ID.
func (r *Relay) Conns() []*Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.conns)
}

// OnAccept sets f to be called for each newly accepted connection before any
// of its bytes is forwarded and before it dials the target, so that a test
// can, for example, hold just that connection. The accept loop waits for f.
func (r *Relay) OnAccept(f func(*Conn)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onAccept = f
}

// Accepted returns the number of connections accepted so far.
func (r *Relay) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

func (r *Relay) acceptLoop() {
	for {
		nc, err := r.ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// A transient error such as EMFILE: pause rather than spin,
			// and keep serving.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c, f := r.add(nc)
		if c == nil {
			_ = nc.Close() // Close has begun.
			continue
		}
		if f != nil {
			f(c)
		}
		r.wg.Go(c.run)
	}
}

// add registers a new connection and returns it with the OnAccept callback,
// or nil once the relay is closed. The connection starts held if the relay
// is, which is decided under r.mu so that it cannot miss a Release.
func (r *Relay) add(nc *net.TCPConn) (*Conn, func(*Conn)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, nil
	}
	c := newConn(r, len(r.conns), nc, r.held)
	r.conns = append(r.conns, c)
	return c, r.onAccept
}
