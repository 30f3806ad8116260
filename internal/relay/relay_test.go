package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// timeout bounds every wait, so that a broken relay fails rather than hangs.
const timeout = 5 * time.Second

// absence is how long a test waits to show that bytes did not arrive.
const absence = 100 * time.Millisecond

// server is a target for the relay. With a handler it serves each accepted
// connection; without one it hands them to the test through conns.
type server struct {
	ln    net.Listener
	conns chan net.Conn
	wg    sync.WaitGroup
	once  sync.Once

	mu     sync.Mutex
	closed bool
	open   []net.Conn
}

func newServer(t *testing.T, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: make(chan net.Conn, 64)}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !s.track(c) {
				return
			}
			if handle == nil {
				s.conns <- c
				continue
			}
			s.wg.Go(func() { handle(c); c.Close() })
		}
	})
	t.Cleanup(s.close)
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

// track records c so that close can close it; it refuses once closed.
func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.open = append(s.open, c)
	return true
}

// close stops the server, closes its connections and waits for its goroutines.
func (s *server) close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		for _, c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.ln.Close()
		s.wg.Wait()
	})
}

// accept returns the next connection the server accepted.
func (s *server) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(timeout):
		t.Fatal("target accepted no connection")
		return nil
	}
}

func echo(c net.Conn) { io.Copy(c, c) }

func start(t *testing.T, target string) *Relay {
	t.Helper()
	r, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// expect reads exactly len(want) bytes from c and compares them.
func expect(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	got := make([]byte, len(want))
	if n, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %q, then %v; want %q", got[:n], err, want)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

// expectEOF reads c to its end and compares everything read.
func expectEOF(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read %q, then %v; want %q and EOF", got, err, want)
	}
	if string(got) != want {
		t.Fatalf("read %q before EOF, want %q", got, want)
	}
}

// expectNothing shows that no byte arrives on c for a short while.
func expectNothing(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(absence))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n > 0 {
		t.Fatalf("read %q while held", buf[:n])
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while held: %v, want a timeout", err)
	}
}

// expectError reads c and returns the error, failing if data arrives.
func expectError(t *testing.T, c net.Conn) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n > 0 || err == nil {
		t.Fatalf("read %q, %v; want no data and an error", buf[:n], err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("connection was not closed")
	}
	return err
}

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// conn returns the relay's connection id, waiting for it to be accepted.
func conn(t *testing.T, r *Relay, id int) *Conn {
	t.Helper()
	waitFor(t, fmt.Sprintf("connection %d to be accepted", id), func() bool {
		return r.Accepted() > id
	})
	return r.Conns()[id]
}

// inspect runs f on c's state under its lock.
func inspect(c *Conn, f func(c *Conn) bool) func() bool {
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return f(c)
	}
}

func TestPass(t *testing.T) {
	s := newServer(t, echo)
	r := start(t, s.addr())
	c := dial(t, r.Addr())
	write(t, c, "hello")
	expect(t, c, "hello")

	rc := conn(t, r, 0)
	waitFor(t, "byte counts", func() bool { return rc.BytesUp() == 5 && rc.BytesDown() == 5 })
	if r.Accepted() != 1 || rc.ID() != 0 || rc.Closed() {
		t.Fatalf("Accepted %d, ID %d, Closed %v; want 1, 0, false", r.Accepted(), rc.ID(), rc.Closed())
	}
	c.Close()
	waitFor(t, "connection to end", rc.Closed)
}

func TestHalfClose(t *testing.T) {
	s := newServer(t, func(c net.Conn) {
		data, _ := io.ReadAll(c)
		c.Write(append([]byte("got "), data...))
	})
	r := start(t, s.addr())
	c := dial(t, r.Addr())
	write(t, c, "ping")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, c, "got ping")
}

func TestHoldRelease(t *testing.T) {
	s := newServer(t, nil)
	r := start(t, s.addr())
	c := dial(t, r.Addr())
	write(t, c, "a")
	tc := s.accept(t)
	expect(t, tc, "a")

	r.Hold()
	write(t, c, "b")
	write(t, c, "c")
	write(t, tc, "x")
	write(t, c, "d")
	write(t, tc, "y")
	expectNothing(t, tc)
	expectNothing(t, c)

	r.Release()
	expect(t, tc, "bcd")
	expect(t, c, "xy")
	write(t, c, "e")
	expect(t, tc, "e")
	// The counter moves after the write reached the target: wait for it.
	rc := conn(t, r, 0)
	waitFor(t, "BytesUp 5", func() bool { return rc.BytesUp() == 5 })
}

// TestHeldBytesAfterClientClose is the lost-commit scenario: a database
// client sends a request during a partition, gives up and closes. The
// request must still reach the server when the partition heals, then EOF.
func TestHeldBytesAfterClientClose(t *testing.T) {
	s := newServer(t, nil)
	r := start(t, s.addr())
	c := dial(t, r.Addr())
	write(t, c, "BEGIN;")
	tc := s.accept(t)
	expect(t, tc, "BEGIN;")

	r.Hold()
	write(t, c, "INSERT;")
	write(t, c, "COMMIT;")
	c.Close()
	rc := conn(t, r, 0)
	waitFor(t, "the relay to see the client's EOF", inspect(rc, func(c *Conn) bool { return c.up.eof }))
	expectNothing(t, tc)
	write(t, tc, "reply nobody will read")

	r.Release()
	expectEOF(t, tc, "INSERT;COMMIT;")
	tc.Close()
	waitFor(t, "connection to end", rc.Closed)
	if rc.BytesUp() != 20 {
		t.Fatalf("BytesUp %d, want 20", rc.BytesUp())
	}
}

func TestHeldBytesAfterTargetClose(t *testing.T) {
	s := newServer(t, nil)
	r := start(t, s.addr())
	c := dial(t, r.Addr())
	write(t, c, "query")
	tc := s.accept(t)
	expect(t, tc, "query")

	r.Hold()
	write(t, tc, "result")
	tc.Close()
	rc := conn(t, r, 0)
	waitFor(t, "the relay to see the target's EOF", inspect(rc, func(c *Conn) bool { return c.down.eof }))
	expectNothing(t, c)

	r.Release()
	expectEOF(t, c, "result")
	c.Close()
	waitFor(t, "connection to end", rc.Closed)
}

// TestNewConnWhileHeld also shows that a held connection does not dial the
// target until it is released.
func TestNewConnWhileHeld(t *testing.T) {
	s := newServer(t, nil)
	r := start(t, s.addr())
	r.Hold()
	c := dial(t, r.Addr())
	write(t, c, "hello")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rc := conn(t, r, 0)
	waitFor(t, "the relay to buffer the client's bytes", inspect(rc, func(c *Conn) bool { return c.up.eof }))
	select {
	case <-s.conns:
		t.Fatal("a held connection reached the target")
	case <-time.After(absence):
	}

	r.Release()
	tc := s.accept(t)
	expectEOF(t, tc, "hello")
	write(t, tc, "bye")
	tc.Close()
	expectEOF(t, c, "bye")
	waitFor(t, "connection to end", rc.Closed)
}

func TestOnAcceptHold(t *testing.T) {
	s := newServer(t, echo)
	r := start(t, s.addr())
	r.OnAccept(func(c *Conn) {
		if c.ID() == 1 {
			c.Hold()
		}
	})
	c0 := dial(t, r.Addr())
	write(t, c0, "zero")
	expect(t, c0, "zero")
	c1 := dial(t, r.Addr())
	write(t, c1, "one")
	conn(t, r, 1)
	c2 := dial(t, r.Addr())
	write(t, c2, "two")
	expect(t, c2, "two")
	expectNothing(t, c1)

	r.Conns()[1].Release()
	expect(t, c1, "one")
	write(t, c0, "again")
	expect(t, c0, "again")
}

func TestReset(t *testing.T) {
	s := newServer(t, nil)
	r := start(t, s.addr())
	c := dial(t, r.Addr())
	write(t, c, "x")
	tc := s.accept(t)
	expect(t, tc, "x")

	r.Hold()
	write(t, c, "dropped")
	rc := conn(t, r, 0)
	waitFor(t, "bytes to be held", inspect(rc, func(c *Conn) bool { return len(c.up.queue) > 0 }))
	r.Reset()

	// Linux reports ECONNRESET on both sides; EOF is tolerated on the client.
	err := expectError(t, c)
	t.Logf("client read after Reset: %v", err)
	if !errors.Is(err, syscall.ECONNRESET) && err != io.EOF {
		t.Fatalf("client read after Reset: %v, want ECONNRESET or EOF", err)
	}
	if err := expectError(t, tc); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("target read after Reset: %v, want ECONNRESET", err)
	}
	waitFor(t, "connection to end", rc.Closed)
	if rc.BytesUp() != 1 {
		t.Fatalf("BytesUp %d, want 1: held bytes were not dropped", rc.BytesUp())
	}

	// Reset left Hold mode, so a new connection passes.
	c2 := dial(t, r.Addr())
	write(t, c2, "y")
	expect(t, s.accept(t), "y")
}

func TestDelay(t *testing.T) {
	s := newServer(t, echo)
	r := start(t, s.addr())
	const d = 50 * time.Millisecond
	r.SetDelay(d)
	c := dial(t, r.Addr())

	begin := time.Now()
	write(t, c, "ping")
	expect(t, c, "ping")
	if rtt := time.Since(begin); rtt < 2*d {
		t.Fatalf("round trip took %v, want at least %v (delayed both ways)", rtt, 2*d)
	}

	var want bytes.Buffer
	for i := range 200 {
		s := fmt.Sprintf("%d,", i)
		want.WriteString(s)
		write(t, c, s)
	}
	expect(t, c, want.String())

	// A chunk with no delay still waits for a delayed one read before it.
	rc := conn(t, r, 0)
	sent := rc.BytesUp()
	r.SetDelay(4 * d)
	write(t, c, "a")
	waitFor(t, "the relay to read a", inspect(rc, func(c *Conn) bool {
		return len(c.up.queue) > 0 || c.bytesUp.Load() > sent
	}))
	r.SetDelay(0)
	write(t, c, "b")
	expect(t, c, "ab")
}

func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	r := start(t, addr)
	c := dial(t, r.Addr())
	expectError(t, c)
	waitFor(t, "connection to end", conn(t, r, 0).Closed)
}

func TestConcurrentControl(t *testing.T) {
	s := newServer(t, echo)
	r := start(t, s.addr())
	c := dial(t, r.Addr())

	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Go(func() {
		// Toggle the faults while traffic flows; the ticker only paces.
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				r.Release()
				return
			case <-tick.C:
			}
			switch i % 4 {
			case 0:
				r.Hold()
			case 1:
				r.SetDelay(time.Millisecond)
			case 2:
				r.Release()
			case 3:
				r.SetDelay(0)
			}
			for _, rc := range r.Conns() {
				rc.BytesUp()
			}
		}
	})
	// Batches of small writes, each echoed back in order before the next.
	for batch := range 200 {
		var want bytes.Buffer
		for i := range 5 {
			line := fmt.Sprintf("batch %d message %d\n", batch, i)
			want.WriteString(line)
			write(t, c, line)
		}
		expect(t, c, want.String())
	}
}

func TestCloseWithHeldConns(t *testing.T) {
	before := runtime.NumGoroutine()
	s := newServer(t, nil)
	r, err := Start(s.addr())
	if err != nil {
		t.Fatal(err)
	}
	c0 := dial(t, r.Addr())
	write(t, c0, "a")
	tc0 := s.accept(t)
	expect(t, tc0, "a")
	r.Hold()
	write(t, c0, "held")
	c1 := dial(t, r.Addr())
	write(t, c1, "never dialled")
	conn(t, r, 1)

	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(timeout):
		t.Fatal("Close did not return")
	}
	for _, rc := range r.Conns() {
		if !rc.Closed() {
			t.Fatalf("connection %d not closed after Close", rc.ID())
		}
	}
	expectError(t, c0)
	expectError(t, c1)
	expectError(t, tc0)
	if c, err := net.Dial("tcp", r.Addr()); err == nil {
		c.Close()
		t.Fatal("relay still accepts after Close")
	}

	s.close()
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}
