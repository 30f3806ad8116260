package api

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// TestConnLoggerNeverLogsRequestBytes feeds fasthttp's own message formats
// with the request bytes it quotes (a bearer token, a password) and checks
// that only the constant head, addresses and numbers reach the log.
func TestConnLoggerNeverLogsRequestBytes(t *testing.T) {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(old)
	const token, password = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.sig", "hunter2-password"
	req := "POST /api/auth HTTP/1.1\r\nAuthorization: Bearer " + token + "\r\n\r\n{\"password\":\"" + password + "\"}"
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 4242}
	cases := []struct {
		format string
		args   []any
		want   string
	}{
		{"error when serving connection %q<->%q: %v", []any{addr, addr,
			fmt.Errorf("error when reading request headers: %w: buffer size=%d, contents: %s",
				errors.New("invalid header key "+fmt.Sprintf("%q", req)), 206, req)}, "error when reading request headers"},
		{"error when serving connection %q<->%q: %v", []any{addr, addr,
			fmt.Errorf("cannot find http request method in %q", req)}, "cannot find http request method in"},
		{"The incoming connection cannot be served, because %d concurrent connections are served", []any{256}, "n=256"},
		{"something %s", []any{req}, "http: something"},
	}
	for _, c := range cases {
		buf.Reset()
		connLogger{}.Printf(c.format, c.args...)
		out := buf.String()
		if strings.Contains(out, token) || strings.Contains(out, password) || strings.Contains(out, "Bearer") {
			t.Fatalf("request bytes in the log: %s", out)
		}
		if !strings.Contains(out, c.want) {
			t.Fatalf("log %q lacks %q", out, c.want)
		}
	}
	buf.Reset()
	connLogger{}.Printf("x %v", &net.OpError{Op: "read", Err: errors.New(password)})
	if strings.Contains(buf.String(), password) || !strings.Contains(buf.String(), "network: read") {
		t.Fatalf("network error logged as %q", buf.String())
	}
}
