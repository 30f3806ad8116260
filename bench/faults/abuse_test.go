package faults

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"merch/bench/harness"
	"merch/persist"
)

// TestFaultHostileLogs: requests fasthttp cannot parse (an invalid byte in
// a header name) carrying a bearer token and a password, and a flood of
// logins of a user whose stored state fails the load check. No token,
// password or password hash reaches the log, and each repeated line is
// written once per LOG_REPEAT_INTERVAL, then counted.
func TestFaultHostileLogs(t *testing.T) {
	dbURL := harness.MustDatabase(t)
	srv := harness.NewServer(t, dbURL, "LOG_LEVEL=info", "LOG_REPEAT_INTERVAL=1m")
	srv.Start()
	c := harness.NewClient(srv.Addr, 32, 3*time.Second)
	const password = "pw-S3CRET-victim"
	tok := c.Auth(t, "victim", password)
	hash := storedHash(t, dbURL, "victim")
	// A user whose stored state breaks the money invariant: every load is
	// refused (503) and logged.
	execSQL(t, dbURL, `INSERT INTO users (name, password_hash, balance, shard) VALUES ('broken', 'x', 1001, merch_shard('broken'))`)

	body := fmt.Sprintf(`{"username":"victim","password":%q}`, password)
	hostile := []string{
		"POST /api/auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nX-Bad\x01Name: 1\r\nContent-Length: " +
			fmt.Sprint(len(body)) + "\r\n\r\n" + body,
		"GET /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nBad Header: " + password + "\r\n\r\n",
		"GET /api/info?password=" + password + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n\x00\r\n\r\n",
		"POST /api/auth HTTP/1.1\r\nHost: x\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\nAuthorization: Bearer " + tok +
			"\r\n\r\n" + body + "\r\nGARBAGE " + password + "\r\n\r\n",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var sent, logins atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				raw(srv.Addr, hostile[(w+i)%len(hostile)])
				sent.Add(1)
			}
		}()
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c.Do("POST", "/api/auth", "", "", map[string]string{"username": "broken", "password": "x"})
				logins.Add(1)
			}
		}()
	}
	wg.Wait()
	log := srv.LogText()
	for _, secret := range []string{tok, password, hash, tok[len(tok)-20:]} {
		if strings.Contains(log, secret) {
			t.Fatalf("the log holds a secret (%.12s…):\n%.3000s", secret, log)
		}
	}
	lines := strings.Count(log, "\n")
	loadLines := strings.Count(log, "load user failed")
	if loadLines != 1 {
		t.Errorf("%d 'load user failed' lines for %d logins of the broken user, want 1 (then counted)", loadLines, logins.Load())
	}
	if lines > 60 {
		t.Errorf("%d log lines for %d hostile requests and %d logins:\n%.4000s", lines, sent.Load(), logins.Load(), log)
	}
	if sent.Load() < 100 || logins.Load() < 100 {
		t.Fatalf("the flood was too small to tell: %d hostile, %d logins", sent.Load(), logins.Load())
	}
	t.Logf("%d unparsable requests with a token and a password, %d logins of a broken user in 3 s: %d log lines (%d of 'load user failed'), no secret",
		sent.Load(), logins.Load(), lines, loadLines)
}

// raw writes one request on a new connection and reads what comes back.
func raw(addr, request string) {
	cn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return
	}
	defer cn.Close()
	_ = cn.SetDeadline(time.Now().Add(time.Second))
	_, _ = cn.Write([]byte(request))
	buf := make([]byte, 512)
	_, _ = cn.Read(buf)
}

func storedHash(tb testing.TB, dbURL, user string) string {
	tb.Helper()
	pool, err := persist.Open(context.Background(), dbURL, 1)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	var h []byte
	if err := pool.QueryRow(context.Background(), `SELECT password_hash FROM users WHERE name = $1`, user).Scan(&h); err != nil {
		tb.Fatal(err)
	}
	return string(h)
}

func execSQL(tb testing.TB, dbURL, sql string) {
	tb.Helper()
	pool, err := persist.Open(context.Background(), dbURL, 1)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(context.Background(), sql); err != nil {
		tb.Fatal(err)
	}
}

// TestFaultRegistrationStorm: 128 connections register new names at real
// bcrypt cost while 30 existing users, not resident (the server was
// restarted), log in one after another: every login succeeds, because a
// verification never waits behind new hashes. Then, with the per-address
// registration limit on, a storm from one address gets 429 with
// Retry-After past its burst while another address still registers.
func TestFaultRegistrationStorm(t *testing.T) {
	dbURL := harness.MustDatabase(t)
	srv := harness.NewServer(t, dbURL, "BCRYPT_COST=10", "HASH_WORKERS=1")
	srv.Start()
	c := harness.NewClient(srv.Addr, 8, 10*time.Second)
	const existing = 30
	for i := range existing {
		c.Auth(t, fmt.Sprintf("e%02d", i), "pw")
	}
	srv.Stop()
	srv.Start() // nobody is resident: each login needs one bcrypt verification

	ctx, cancel := context.WithCancel(context.Background())
	storm := harness.NewClient(srv.Addr, 128, 10*time.Second)
	var created, shed atomic.Int64
	var wg sync.WaitGroup
	for w := range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				r := storm.Do("POST", "/api/auth", "", "", map[string]string{"username": fmt.Sprintf("n%d-%d", w, i), "password": "pw"})
				switch r.Code {
				case 200:
					created.Add(1)
				case 503:
					shed.Add(1)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // let the storm fill the hash queue
	codes := map[int]int{}
	var lat harness.Latencies
	for i := range existing {
		r := c.Do("POST", "/api/auth", "", "", map[string]string{"username": fmt.Sprintf("e%02d", i), "password": "pw"})
		codes[r.Code]++
		lat = append(lat, r.Latency)
	}
	cancel()
	wg.Wait()
	if codes[200] != existing {
		t.Fatalf("logins of existing users during the storm: %v, want %d × 200 (storm: %d created, %d shed)",
			codes, existing, created.Load(), shed.Load())
	}
	if shed.Load() == 0 {
		t.Fatalf("the storm never filled the hash queue (%d created): the test proves nothing", created.Load())
	}
	t.Logf("registration storm (128 connections, cost 10, 1 hash worker): %d created, %d shed; %d/%d existing logins 200, %s",
		created.Load(), shed.Load(), codes[200], existing, lat)

	// The per-address limit.
	srv.Stop()
	srv = harness.NewServer(t, dbURL, "REGISTER_RATE=2", "REGISTER_BURST=5")
	srv.Start()
	from2 := harness.NewClientFrom(srv.Addr, "127.0.0.2", 16, 10*time.Second)
	got := map[int]int{}
	for i := range 40 {
		r := from2.Do("POST", "/api/auth", "", "", map[string]string{"username": fmt.Sprintf("r%d", i), "password": "pw"})
		got[r.Code]++
		if r.Code == 429 && r.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if got[200] < 5 || got[200] > 8 || got[429] < 30 {
		t.Fatalf("40 registrations from one address, burst 5 at 2/s: %v", got)
	}
	from3 := harness.NewClientFrom(srv.Addr, "127.0.0.3", 1, 10*time.Second)
	if r := from3.Do("POST", "/api/auth", "", "", map[string]string{"username": "other", "password": "pw"}); r.Code != 200 {
		t.Fatalf("another address: %d %s", r.Code, r.Body)
	}
	if r := from2.Do("POST", "/api/auth", "", "", map[string]string{"username": "r0", "password": "pw"}); r.Code != 200 {
		t.Fatalf("login (not a registration) from the limited address: %d %s", r.Code, r.Body)
	}
	t.Logf("registration limit 2/s burst 5: 40 from one address → %v; another address and logins unaffected", got)
}
