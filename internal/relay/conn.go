package relay

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// dialTimeout bounds the upstream dial, so a wrong target fails a test
// rather than hanging it.
const dialTimeout = 10 * time.Second

// Conn is one relayed connection. Each direction has a reader goroutine
// that buffers chunks and a writer goroutine that delivers them, so that
// holding or delaying a direction never stops its reader.
type Conn struct {
	relay  *Relay
	id     int
	client *net.TCPConn
	done   chan struct{} // Closed by kill; wakes writers waiting out a delay.
	closed atomic.Bool

	bytesUp, bytesDown atomic.Int64

	mu     sync.Mutex
	cond   sync.Cond    // Broadcast on every change of the fields below.
	held   bool         // Writers deliver nothing and the dial waits.
	dead   bool         // Reset or closed: stop at once, buffers dropped.
	target *net.TCPConn // Nil until dialled.
	up     pipe         // Client to target.
	down   pipe         // Target to client.
}

// pipe is the buffer of one direction; it is guarded by Conn.mu.
type pipe struct {
	queue []chunk
	eof   bool // The source has ended; no chunk will be added.
}

type chunk struct {
	data []byte
	due  time.Time // Earliest write time: read time plus the delay.
}

func newConn(r *Relay, id int, client *net.TCPConn, held bool) *Conn {
	c := &Conn{relay: r, id: id, client: client, held: held, done: make(chan struct{})}
	c.cond.L = &c.mu
	return c
}

// ID returns the connection's 0-based accept order.
func (c *Conn) ID() int { return c.id }

// Closed reports whether the connection has ended and its sockets are closed.
func (c *Conn) Closed() bool { return c.closed.Load() }

// BytesUp returns the number of client to target bytes delivered to the target.
func (c *Conn) BytesUp() int64 { return c.bytesUp.Load() }

// BytesDown returns the number of target to client bytes delivered to the client.
func (c *Conn) BytesDown() int64 { return c.bytesDown.Load() }

// Hold stops this connection delivering bytes in both directions; they are
// buffered until Release. If it has not dialled the target yet, the dial
// waits too.
func (c *Conn) Hold() { c.setHeld(true) }

// Release delivers this connection's buffered bytes in order, then passes.
func (c *Conn) Release() { c.setHeld(false) }

// Reset sends RST on both sides of this connection and drops its buffers.
func (c *Conn) Reset() { c.kill(true) }

func (c *Conn) setHeld(held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = held
	c.cond.Broadcast()
}

// kill ends the connection at once and drops its buffers. With rst the
// sockets are closed with SO_LINGER 0, so the peers see ECONNRESET. The
// sockets are closed under c.mu, before any writer can see dead, so that no
// writer half-closes (sends a FIN) ahead of the RST.
func (c *Conn) kill(rst bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	c.dead = true
	c.up.queue, c.down.queue = nil, nil
	close(c.done)
	c.cond.Broadcast()
	for _, s := range []*net.TCPConn{c.client, c.target} {
		if s == nil {
			continue
		}
		if rst {
			_ = s.SetLinger(0)
		}
		_ = s.Close()
	}
}

// run relays the connection until both directions have ended or it is killed.
func (c *Conn) run() {
	var readers sync.WaitGroup
	readers.Go(func() { c.read(c.client, &c.up) })
	if target := c.dial(); target != nil {
		readers.Go(func() { c.read(target, &c.down) })
		var up sync.WaitGroup
		up.Go(func() { c.write(&c.up, target, &c.bytesUp) })
		c.write(&c.down, c.client, &c.bytesDown)
		up.Wait()
		_ = target.Close()
	}
	_ = c.client.Close()
	readers.Wait()
	c.closed.Store(true)
}

// dial connects to the target once the connection is not held, so that a
// partition hides new connections from the target as well. It returns nil
// if the connection was killed, or if the dial failed, which closes the client.
func (c *Conn) dial() *net.TCPConn {
	c.mu.Lock()
	for c.held && !c.dead {
		c.cond.Wait()
	}
	dead := c.dead
	c.mu.Unlock()
	if dead {
		return nil
	}

	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(c.relay.ctx, "tcp", c.relay.target)
	if err != nil {
		c.kill(false)
		return nil
	}
	target := nc.(*net.TCPConn)

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead { // Killed while dialling.
		_ = target.SetLinger(0)
		_ = target.Close()
		return nil
	}
	c.target = target
	return target
}

// read buffers everything src sends into p until src ends. It never waits
// for the writer, which is what lets held bytes outlive a closed sender.
func (c *Conn) read(src *net.TCPConn, p *pipe) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		c.mu.Lock()
		if n > 0 && !c.dead {
			due := time.Now().Add(time.Duration(c.relay.delay.Load()))
			p.queue = append(p.queue, chunk{data: bytes.Clone(buf[:n]), due: due})
		}
		if err != nil {
			p.eof = true
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// write delivers p's chunks to dst in order, counting the bytes in n. After
// a write error the rest is discarded, as the receiver has gone. Once the
// source has ended and everything is delivered, it half-closes dst to pass
// the EOF on.
func (c *Conn) write(p *pipe, dst *net.TCPConn, n *atomic.Int64) {
	failed := false
	for {
		data, ok := c.next(p)
		if !ok {
			break
		}
		if failed {
			continue
		}
		m, err := dst.Write(data)
		n.Add(int64(m))
		failed = err != nil
	}
	_ = dst.CloseWrite() // Fails harmlessly if the connection was killed.
}

// next waits until p's first chunk may be written (not held, and due) and
// removes it. It returns false once p has ended and is empty, or on kill.
func (c *Conn) next(p *pipe) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.dead:
			return nil, false
		case c.held || (len(p.queue) == 0 && !p.eof):
			c.cond.Wait()
		case len(p.queue) == 0:
			return nil, false
		default:
			if wait := time.Until(p.queue[0].due); wait > 0 {
				// Only this writer removes chunks, so the head stays
				// put; hold and kill are checked again after the wait.
				c.mu.Unlock()
				c.sleep(wait)
				c.mu.Lock()
				continue
			}
			data := p.queue[0].data
			p.queue[0] = chunk{} // Let the data be collected once written.
			p.queue = p.queue[1:]
			return data, true
		}
	}
}

// sleep waits for d, or until the connection is killed.
func (c *Conn) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.done:
	}
}
