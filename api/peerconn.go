package api

// Connections to peers' internal listeners. A pooled connection the peer
// closed while it sat idle (the peer restarted, or its relay reset) looks
// fine until a request is written on it and the answer never comes — and
// then nobody can tell whether the peer processed the request. Before
// reusing a connection, checkedConn asks the kernel whether the peer has
// closed it; if so the write fails with errNotSent, which the forwarder
// knows is safe to retry for any request.

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// errNotSent: a forwarded request never left this node (the dial failed,
// or the pooled connection was found closed before writing).
var errNotSent = errors.New("api: request not sent to the peer")

// notSentError wraps the cause; errors.Is(err, errNotSent) holds.
type notSentError struct{ cause error }

func (e notSentError) Error() string        { return errNotSent.Error() + ": " + e.cause.Error() }
func (e notSentError) Is(target error) bool { return target == errNotSent }

// dialPeer connects to a peer within timeout; the connection checks itself
// before each reuse.
func dialPeer(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, notSentError{err}
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		_ = c.Close()
		return nil, notSentError{err}
	}
	return &checkedConn{Conn: c, raw: raw}, nil
}

// checkedConn is a peer connection that checks, at the first write after a
// read (a request on a reused connection), that the peer has not closed
// it. Used by one request at a time, like every pooled connection.
type checkedConn struct {
	net.Conn
	raw    syscall.RawConn
	reused bool // an answer was read since the last write
}

func (c *checkedConn) Read(b []byte) (int, error) {
	c.reused = true
	return c.Conn.Read(b)
}

func (c *checkedConn) Write(b []byte) (int, error) {
	if c.reused {
		c.reused = false
		if err := c.open(); err != nil {
			return 0, notSentError{err}
		}
	}
	return c.Conn.Write(b)
}

var errPeerClosed = errors.New("the peer closed the idle connection")

// open reports whether the connection is still open: nothing to read
// (EAGAIN). A peer that closed it shows end of file or a reset; any bytes
// waiting are unsolicited (a peer's goodbye) and as final.
func (c *checkedConn) open() error {
	var (
		rerr error
		buf  [1]byte
	)
	if err := c.raw.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readability
	}); err != nil {
		return err
	}
	switch {
	case errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK): // nothing to read
		return nil
	case rerr != nil:
		return rerr
	default: // read 0 bytes (end of file) or unsolicited ones
		return errPeerClosed
	}
}
