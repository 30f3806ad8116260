package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestIsProbe(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"-probe", "http://x"}, true},
		{[]string{"--probe", "http://x"}, true},
		{[]string{"-probe=http://x"}, true},
		{[]string{"-probe"}, true}, // probeMain then prints its usage
		{nil, false},
		{[]string{"-probe-timeout", "1s"}, false},
		{[]string{"probe", "http://x"}, false},
		{[]string{"-http-addr", ":0", "-probe", "http://x"}, false}, // a mode, first only
	} {
		if got := isProbe(tc.args); got != tc.want {
			t.Errorf("isProbe(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestProbeMain checks the exit status and message for a server answering
// 200, 503 and a redirect, an address nobody listens on, and bad command
// lines. The environment plays no part: probeMain is never given it.
func TestProbeMain(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := "http://" + ln.Addr().String() + "/readyz"
	ln.Close() // connection refused from here on

	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		message string // in stderr; "" means stderr stays empty
	}{
		{"2xx", []string{"-probe", srv.URL + "/ok"}, 0, ""},
		{"2xx, = form", []string{"-probe=" + srv.URL + "/ok"}, 0, ""},
		{"503", []string{"-probe", srv.URL + "/readyz"}, 1, "503 Service Unavailable"},
		{"redirect not followed", []string{"-probe", srv.URL + "/moved"}, 1, "302 Found"},
		{"nothing listening", []string{"-probe", nobody}, 1, "connection refused"},
		{"no URL", []string{"-probe"}, 2, "usage: merch-store -probe URL"},
		{"empty URL", []string{"-probe="}, 2, "usage: merch-store -probe URL"},
		{"extra argument", []string{"-probe", srv.URL + "/ok", "more"}, 2, "usage: merch-store -probe URL"},
		{"other flags", []string{"-probe", srv.URL + "/ok", "-http-addr", ":1"}, 2, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := probeMain(tc.args, &stderr)
			if code != tc.code {
				t.Errorf("exit status %d, want %d (stderr %q)", code, tc.code, stderr.String())
			}
			if tc.message == "" && stderr.Len() > 0 || !strings.Contains(stderr.String(), tc.message) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.message)
			}
		})
	}
}

// TestProbeTimeout: a server that accepts and never answers fails the
// probe once the timeout passes.
func TestProbeTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release) // before srv.Close, which waits for the handler

	start := time.Now()
	err := probe(srv.URL, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "Timeout") {
		t.Fatalf("probe of a server that never answers: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("probe took %v with a 100ms timeout", d)
	}
}
