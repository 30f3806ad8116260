package listener

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// Responses to rejected clients, built once. "Connection: close" and the
// exact Content-Length let the client read the whole answer before our close.
var (
	busyResponse  = rejection(503, "Service Unavailable", `{"errors":"too many connections"}`)
	perIPResponse = rejection(429, "Too Many Requests", `{"errors":"too many connections from this address"}`)
)

func rejection(code int, status, body string) []byte {
	return []byte("HTTP/1.1 " + strconv.Itoa(code) + " " + status + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Retry-After: 1\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"\r\n" + body)
}

// conn is an admitted connection; it passes everything through to the
// accepted conn except Close, which also releases its admission.
type conn struct {
	net.Conn
	l      *Listener
	ip     netip.Addr // Invalid when the per-IP cap is off or the peer has no IP.
	closed atomic.Bool
}

// Close closes the connection; only the first call releases its admission.
func (c *conn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.ip)
	}
	return err
}

// admit counts c and returns it wrapped, or rejects it and returns nil.
func (l *Listener) admit(c net.Conn) net.Conn {
	var ip netip.Addr
	if l.cfg.MaxConnsPerIP > 0 {
		ip = remoteIP(c)
	}
	l.mu.Lock()
	reason := ""
	switch {
	case l.cfg.MaxConns > 0 && l.open >= l.cfg.MaxConns:
		reason = ReasonMaxConns
	case ip.IsValid() && l.perIP[ip] >= l.cfg.MaxConnsPerIP:
		reason = ReasonMaxConnsPerIP
	default:
		l.open++
		if ip.IsValid() {
			l.perIP[ip]++
		}
	}
	l.mu.Unlock()
	if reason != "" {
		l.reject(c, reason)
		return nil
	}
	return &conn{Conn: c, l: l, ip: ip}
}

// release undoes one admission, dropping the IP's entry when it reaches 0 so
// the table holds only addresses with open connections.
func (l *Listener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open > 0 {
		l.open--
	}
	if !ip.IsValid() {
		return
	}
	if n := l.perIP[ip]; n > 1 {
		l.perIP[ip] = n - 1
	} else {
		delete(l.perIP, ip)
	}
}

// reject counts a rejected connection and hands it to a rejecter goroutine,
// or closes it at once when maxRejecters are already busy.
func (l *Listener) reject(c net.Conn, reason string) {
	l.rejected.Add(1)
	if l.cfg.OnReject != nil {
		l.cfg.OnReject(reason)
	}
	resp := busyResponse
	if reason == ReasonMaxConnsPerIP {
		resp = perIPResponse
	}
	select {
	case l.rejecters <- struct{}{}:
		go func() {
			defer func() { <-l.rejecters }()
			answer(c, resp, l.rejectTimeout)
		}()
	default:
		_ = c.Close()
	}
}

// answer writes resp to c and closes it. Closing a socket with unread input
// makes the kernel send RST, which can destroy the response before the client
// reads it; so it half-closes first and drains what the client sent until the
// client closes, drainLimit is reached or the timeout expires.
func answer(c net.Conn, resp []byte, timeout time.Duration) {
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(resp); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.CopyN(io.Discard, c, drainLimit)
}

// remoteIP returns the peer's IP address, or the zero Addr if it has none.
// IPv4-mapped IPv6 addresses are unmapped so both forms count as one client.
func remoteIP(c net.Conn) netip.Addr {
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}
		}
		return ap.Addr().Unmap()
	}
}
