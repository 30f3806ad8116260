package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors/actorstest"
	"merch/internal/pgtest"
	"merch/persist"
)

var pgc *pgtest.Cluster

func TestMain(m *testing.M) {
	var err error
	pgc, err = pgtest.Start(pgtest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e tests need PostgreSQL:", err)
		os.Exit(1)
	}
	setupLogging(Config{LogLevel: "warn", LogFormat: "text"}, os.Stderr)
	code := m.Run()
	pgc.Close()
	os.Exit(code)
}

var dbSeq atomic.Int64

// mustDatabase creates a fresh database for one test.
func mustDatabase(tb testing.TB) string {
	tb.Helper()
	url, err := pgc.CreateDatabase(fmt.Sprintf("e2e%d_%d", os.Getpid(), dbSeq.Add(1)))
	if err != nil {
		tb.Fatal(err)
	}
	return url
}

func testConfig(dbURL string) Config {
	c := DefaultConfig()
	c.HTTPAddr = "127.0.0.1:0"
	c.AdminAddr = "127.0.0.1:0"
	c.RegisterRate = 0 // the tests register many users from 127.0.0.1
	c.DatabaseURL = dbURL
	c.JWTSecret = "e2e-secret-0123456789"
	c.BcryptCost = 4
	c.RequestTimeout = 5 * time.Second
	c.ShutdownTimeout = 10 * time.Second
	return c
}

// server is a running Main with an HTTP client.
type server struct {
	tb    testing.TB
	m     *Main
	base  string
	admin string // the admin listener's base URL
	hc    *http.Client
}

func mustStart(tb testing.TB, cfg Config) *server {
	tb.Helper()
	m := New(cfg)
	m.OnFatal = func(err error) { tb.Errorf("fatal: %v", err) }
	if err := m.Start(context.Background()); err != nil {
		m.Close()
		tb.Fatal(err)
	}
	s := &server{tb: tb, m: m, base: "http://" + m.Addr(), admin: "http://" + m.AdminAddr(),
		hc: &http.Client{Timeout: 10 * time.Second}}
	tb.Cleanup(func() { s.close() })
	return s
}

func (s *server) close() {
	if s.m != nil {
		if err := s.m.Close(); err != nil {
			s.tb.Errorf("close: %v", err)
		}
		s.m = nil
	}
}

// do sends a request and returns status and body.
func (s *server) do(method, path, token string, body any) (int, []byte) {
	s.tb.Helper()
	return s.doKey(method, path, token, "", body)
}

// doKey is do with an Idempotency-Key header (none when key is "").
func (s *server) doKey(method, path, token, key string, body any) (int, []byte) {
	s.tb.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	base := s.base
	if isAdminPath(path) {
		base = s.admin
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		s.tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		s.tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.tb.Fatal(err)
	}
	return resp.StatusCode, b
}

func (s *server) auth(user, password string) string {
	s.tb.Helper()
	code, body := s.do("POST", "/api/auth", "", map[string]string{"username": user, "password": password})
	if code != 200 {
		s.tb.Fatalf("auth %s: %d %s", user, code, body)
	}
	var out struct{ Token string }
	if err := json.Unmarshal(body, &out); err != nil || out.Token == "" {
		s.tb.Fatalf("auth %s: body %s: %v", user, body, err)
	}
	return out.Token
}

func (s *server) info(token string) (actorstest.Info, []byte) {
	s.tb.Helper()
	code, body := s.do("GET", "/api/info", token, nil)
	if code != 200 {
		s.tb.Fatalf("info: %d %s", code, body)
	}
	out, err := actorstest.DecodeInfo(body)
	if err != nil {
		s.tb.Fatalf("info body %s: %v", body, err)
	}
	return out, body
}

func (s *server) buy(token, item string) (int, []byte) {
	return s.do("GET", "/api/buy/"+item, token, nil)
}

func (s *server) send(token, to string, amount int64) (int, []byte) {
	return s.do("POST", "/api/sendCoin", token, map[string]any{"toUser": to, "amount": amount})
}

func mustPool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	pool, err := persist.Open(context.Background(), url, 2)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// mustAudit checks money conservation directly in the database.
func mustAudit(tb testing.TB, url string, wantUsers int64) persist.AuditReport {
	tb.Helper()
	r, err := persist.Audit(context.Background(), mustPool(tb, url))
	if err != nil {
		tb.Fatal(err)
	}
	if !r.OK() || r.Users != wantUsers {
		tb.Fatalf("audit (want %d users): %s", wantUsers, r)
	}
	return r
}

func newRequest(method, url, token string) (*http.Request, error) {
	req, err := http.NewRequest(method, url, nil)
	if err == nil && token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, err
}

// isAdminPath reports whether path is served on the admin listener.
func isAdminPath(path string) bool {
	switch path {
	case "/metrics", "/healthz", "/readyz":
		return true
	}
	return strings.HasPrefix(path, "/debug/pprof/")
}
