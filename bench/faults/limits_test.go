package faults

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"merch/bench/harness"
)

// TestFaultIdleConnectionFlood: with a file descriptor limit of 256, more
// idle connections than it allows are opened. The server caps connections
// below the limit (MAX_CONNS lowered to fit), answers the excess with a
// JSON 503 and Retry-After, keeps serving, and serves new clients once the
// idle ones close. It never exits.
func TestFaultIdleConnectionFlood(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Fatal("needs prlimit (util-linux)")
	}
	const nofile, idle = 256, 400
	srv := harness.NewServer(t, harness.MustDatabase(t), "LOG_LEVEL=info")
	srv.Prefix = []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", nofile, nofile), "--"}
	srv.Start()
	c := harness.NewClient(srv.Addr, 4, 3*time.Second)
	tok := c.Auth(t, "idler", "pw")

	var conns []net.Conn
	defer func() {
		for _, cn := range conns {
			_ = cn.Close()
		}
	}()
	rejected, closed, admitted := 0, 0, 0
	for range idle {
		cn, err := net.DialTimeout("tcp", srv.Addr, 3*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, cn)
	}
	// Every connection past the cap is answered and closed at once; the
	// admitted ones stay open and silent (until READ_TIMEOUT, 10 s).
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad error
	for _, cn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = cn.SetReadDeadline(time.Now().Add(time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(cn), nil)
			mu.Lock()
			defer mu.Unlock()
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				admitted++ // open and silent
				return
			case err != nil:
				closed++ // rejected past the bound on answered rejections: closed at once
				return
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" ||
				resp.Header.Get("Content-Type") != "application/json" {
				bad = fmt.Errorf("rejected connection answered %d %v", resp.StatusCode, resp.Header)
			}
			rejected++
		}()
	}
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
	// 256 descriptors − 128 reserved − 16 for the database pool = 112,
	// one of them c's connection.
	if rejected == 0 || admitted == 0 || admitted > 112 {
		t.Fatalf("%d idle connections: %d admitted, %d answered 503, %d closed: the cap did not act", idle, admitted, rejected, closed)
	}
	if !srv.Alive() {
		t.Fatalf("server exited under the flood; log:\n%s", srv.LogText())
	}
	// While the flood holds every slot, a new client is refused cleanly
	// (c's own keep-alive connection was admitted before the flood).
	if r := harness.NewClient(srv.Addr, 1, 3*time.Second).Do("GET", "/api/info", tok, "", nil); r.Code != 503 {
		t.Fatalf("a new client past the cap: %d %s %v", r.Code, r.Body, r.Err)
	}
	for _, cn := range conns {
		_ = cn.Close()
	}
	conns = nil
	fresh := func() bool {
		return harness.NewClient(srv.Addr, 1, 3*time.Second).Do("GET", "/api/info", tok, "", nil).Code == 200
	}
	if !harness.WaitUntil(10*time.Second, fresh) {
		t.Fatalf("new clients not served after the idle connections closed; log:\n%s", srv.LogText())
	}
	if !srv.Alive() {
		t.Fatal("server exited")
	}
	log := srv.LogText()
	if !strings.Contains(log, "MAX_CONNS lowered") {
		t.Errorf("no log line says MAX_CONNS was lowered to the fd limit:\n%s", log)
	}
	t.Logf("nofile %d: %d idle connections opened, %d admitted, %d answered 503, %d closed at once; served again once they closed; server alive",
		nofile, idle, admitted, rejected, closed)
}

// TestFaultConnectionsPerAddress: MAX_CONNS_PER_IP caps one client
// address (429 past it) without touching another.
func TestFaultConnectionsPerAddress(t *testing.T) {
	const perIP = 20
	srv := harness.NewServer(t, harness.MustDatabase(t), fmt.Sprintf("MAX_CONNS_PER_IP=%d", perIP))
	srv.Start()
	dial := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}
		cn, err := d.Dial("tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return cn
	}
	var held []net.Conn
	defer func() {
		for _, cn := range held {
			_ = cn.Close()
		}
	}()
	for range perIP {
		held = append(held, dial("127.0.0.2"))
	}
	// Admission is counted at accept: wait until the server holds them.
	status := func(from string) int {
		cn := dial(from)
		defer cn.Close()
		_, _ = fmt.Fprintf(cn, "GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = cn.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(cn), nil)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if !harness.WaitUntil(5*time.Second, func() bool { return status("127.0.0.2") == 429 }) {
		t.Fatal("connection past MAX_CONNS_PER_IP not answered 429")
	}
	if s := status("127.0.0.3"); s != 401 {
		t.Fatalf("another address: %d, want 401 (served, no token)", s)
	}
}

// TestFaultStartupHang: a database that accepts connections but never
// answers. Start-up gives up at START_TIMEOUT with an error that says so,
// and a signal during start-up stops the process at once; both exit
// non-zero.
func TestFaultStartupHang(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 64)
	var mu sync.Mutex
	var open []net.Conn
	go func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, cn) // held, never answered
			mu.Unlock()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	defer func() {
		mu.Lock()
		for _, cn := range open {
			_ = cn.Close()
		}
		mu.Unlock()
	}()
	url := "postgres://merch:s3cret@" + ln.Addr().String() + "/merch?sslmode=disable"

	t.Run("deadline", func(t *testing.T) {
		srv := harness.NewServer(t, url, "START_TIMEOUT=2s")
		start := time.Now()
		srv.Launch()
		code, exited := srv.WaitExit(15 * time.Second)
		took := time.Since(start)
		if !exited {
			t.Fatalf("still starting after 15 s; log:\n%s", srv.LogText())
		}
		log := srv.LogText()
		if code == 0 || !strings.Contains(log, "START_TIMEOUT") || strings.Contains(log, "s3cret") {
			t.Fatalf("exit %d after %v; log:\n%s", code, took, log)
		}
		if took > 5*time.Second {
			t.Fatalf("gave up after %v, START_TIMEOUT is 2 s", took)
		}
		t.Logf("hung database: exit %d after %v", code, took.Round(time.Millisecond))
	})
	t.Run("signal", func(t *testing.T) {
		srv := harness.NewServer(t, url, "START_TIMEOUT=1m")
		for len(accepted) > 0 {
			<-accepted // from the first subtest
		}
		srv.Launch()
		select {
		case <-accepted: // the server is connecting: start-up is under way
		case <-time.After(10 * time.Second):
			t.Fatal("the server never connected to the database")
		}
		sent := time.Now()
		srv.Signal(syscall.SIGTERM)
		code, exited := srv.WaitExit(5 * time.Second)
		if !exited {
			t.Fatalf("SIGTERM during start-up ignored; log:\n%s", srv.LogText())
		}
		log := srv.LogText()
		if code == 0 || !strings.Contains(log, "terminated") {
			t.Fatalf("exit %d; log:\n%s", code, log)
		}
		t.Logf("SIGTERM during start-up: exit %d after %v", code, time.Since(sent).Round(time.Millisecond))
	})
}
