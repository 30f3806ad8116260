package api

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDocumentedServerSettings pins the HTTP limits the README documents.
func TestDocumentedServerSettings(t *testing.T) {
	e := mustEnv(t, envConfig{noHTTPServer: true})
	hs := e.srv.HTTPServer()
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"ReadTimeout", hs.ReadTimeout, 10 * time.Second},
		{"WriteTimeout", hs.WriteTimeout, 10 * time.Second},
		{"IdleTimeout", hs.IdleTimeout, 60 * time.Second},
		{"MaxRequestBodySize", hs.MaxRequestBodySize, 4 << 10},
		{"ReadBufferSize (header limit)", hs.ReadBufferSize, 8 << 10},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v (update the README with it)", c.name, c.got, c.want)
		}
	}
}

// serveShort serves the real handler and error handler with short
// timeouts on a loopback TCP listener.
func serveShort(t *testing.T, read, idle time.Duration) string {
	t.Helper()
	e := mustEnv(t, envConfig{noHTTPServer: true})
	hs := e.srv.HTTPServer()
	hs.ReadTimeout, hs.IdleTimeout = read, idle
	hs.Logger = discardLogger{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Shutdown(); <-done })
	return ln.Addr().String()
}

// readAllBounded reads until the server closes the connection; the
// deadline only bounds a failure.
func readAllBounded(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestSlowClientIsCut: a client that sends part of a request and stalls
// is answered 408 in the API's error shape and disconnected after the read
// timeout, so slow clients cannot hold connections forever.
func TestSlowClientIsCut(t *testing.T) {
	addr := serveShort(t, 200*time.Millisecond, time.Minute)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /api/info HTTP/1.1\r\nHost: x\r\nAuthor"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := readAllBounded(t, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server kept a stalled connection open for %v", time.Since(start))
	}
	if got != "" {
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
		if err != nil {
			t.Fatalf("bad response %q: %v", got, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 408 || !strings.Contains(string(body), `"errors"`) {
			t.Fatalf("stalled request answered %d %s", resp.StatusCode, body)
		}
	}
}

// TestIdleConnectionIsClosed: a keep-alive connection with no next request
// is closed after the idle timeout.
func TestIdleConnectionIsClosed(t *testing.T) {
	addr := serveShort(t, time.Minute, 200*time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := br.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("idle connection not closed: n=%d err=%v", n, err)
	}
}
