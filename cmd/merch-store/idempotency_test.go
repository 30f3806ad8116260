package main

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"
)

// keyed sends a request with an Idempotency-Key header.
func (s *server) keyed(method, path, token, key string, body any) (int, []byte) {
	s.tb.Helper()
	return s.doKey(method, path, token, key, body)
}

func TestIdempotencyReplayGetsOriginalStatus(t *testing.T) {
	s := mustStart(t, testConfig(mustDatabase(t)))
	a, _ := s.auth("ida", "pw"), s.auth("idb", "pw")
	for i := range 3 {
		if code, body := s.keyed("GET", "/api/buy/book", a, "buy-1", nil); code != 200 {
			t.Fatalf("buy attempt %d: %d %s", i, code, body)
		}
		if code, body := s.keyed("POST", "/api/sendCoin", a, "send-1", map[string]any{"toUser": "idb", "amount": 100}); code != 200 {
			t.Fatalf("send attempt %d: %d %s", i, code, body)
		}
	}
	if info, _ := s.info(a); info.Coins != 1000-50-100 {
		t.Fatalf("coins = %d: a keyed change applied more than once", info.Coins)
	}
	// A refusal replays as the same refusal, even if the balance changed.
	code, body := s.keyed("POST", "/api/sendCoin", a, "big", map[string]any{"toUser": "idb", "amount": 900})
	if code != 400 {
		t.Fatalf("over-send: %d %s", code, body)
	}
	if code2, body2 := s.keyed("POST", "/api/sendCoin", a, "big", map[string]any{"toUser": "idb", "amount": 900}); code2 != code || string(body2) != string(body) {
		t.Fatalf("replayed refusal: %d %s, original %d %s", code2, body2, code, body)
	}
	// The same key for a different request is refused.
	if code, _ := s.keyed("GET", "/api/buy/pen", a, "buy-1", nil); code != 422 {
		t.Fatalf("reused key: %d, want 422", code)
	}
}

func TestIdempotencyConcurrentDuplicates(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	a, _ := s.auth("cda", "pw"), s.auth("cdb", "pw")
	const dup = 16
	codes := make([]int, dup)
	var wg sync.WaitGroup
	for i := range dup {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = s.keyed("POST", "/api/sendCoin", a, "same", map[string]any{"toUser": "cdb", "amount": 7})
		}()
	}
	wg.Wait()
	oks := 0
	for _, c := range codes {
		switch c {
		case 200:
			oks++
		case 409: // the original was still in flight
		default:
			t.Errorf("duplicate answered %d", c)
		}
	}
	if oks == 0 {
		t.Fatal("no duplicate answered 200")
	}
	if info, _ := s.info(a); info.Coins != 993 {
		t.Fatalf("coins = %d, want 993: applied %d times", info.Coins, (1000-info.Coins)/7)
	}
	// After the original finished, every replay answers 200.
	if code, _ := s.keyed("POST", "/api/sendCoin", a, "same", map[string]any{"toUser": "cdb", "amount": 7}); code != 200 {
		t.Fatalf("replay after completion: %d", code)
	}
	mustAudit(t, url, 2)
}

func TestIdempotencyAcrossRestart(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	a, _ := s.auth("ra", "pw"), s.auth("rb", "pw")
	if code, _ := s.keyed("GET", "/api/buy/umbrella", a, "k-umbrella", nil); code != 200 {
		t.Fatal("buy failed")
	}
	if code, _ := s.keyed("POST", "/api/sendCoin", a, "k-send", map[string]any{"toUser": "rb", "amount": 300}); code != 200 {
		t.Fatal("send failed")
	}
	s.close()
	s2 := mustStart(t, testConfig(url))
	// The keys were stored with the changes: replays after a restart are
	// recognised, not applied again.
	if code, body := s2.keyed("GET", "/api/buy/umbrella", a, "k-umbrella", nil); code != 200 {
		t.Fatalf("replay buy: %d %s", code, body)
	}
	if code, body := s2.keyed("POST", "/api/sendCoin", a, "k-send", map[string]any{"toUser": "rb", "amount": 300}); code != 200 {
		t.Fatalf("replay send: %d %s", code, body)
	}
	if code, _ := s2.keyed("POST", "/api/sendCoin", a, "k-send", map[string]any{"toUser": "rb", "amount": 301}); code != 422 {
		t.Fatalf("changed request with a stored key: %d, want 422", code)
	}
	if info, _ := s2.info(a); info.Coins != 1000-200-300 {
		t.Fatalf("coins = %d after replays", info.Coins)
	}
	mustAudit(t, url, 2)
}

// TestIdempotencyBeyondMemoryTable: the actor remembers the last
// KeysPerUserMax keys; an older key is looked up in the store, so its
// replay is still recognised within the retention period.
func TestIdempotencyBeyondMemoryTable(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	a, b := s.auth("ma", "pw"), s.auth("mb", "pw")
	const n = 1001 // actors.KeysPerUserMax + 1
	for i := range n {
		if i == 900 { // top up so all n sends can succeed
			if code, _ := s.send(b, "ma", 100); code != 200 {
				t.Fatal("top-up failed")
			}
		}
		if code, body := s.keyed("POST", "/api/sendCoin", a, "old-"+itoa(i), map[string]any{"toUser": "mb", "amount": 1}); code != 200 {
			t.Fatalf("send %d: %d %s", i, code, body)
		}
	}
	if code, body := s.keyed("POST", "/api/sendCoin", a, "old-0", map[string]any{"toUser": "mb", "amount": 1}); code != 200 {
		t.Fatalf("replay of the oldest key: %d %s", code, body)
	}
	if code, _ := s.keyed("POST", "/api/sendCoin", a, "old-0", map[string]any{"toUser": "mb", "amount": 2}); code != 422 {
		t.Fatalf("oldest key with another request: %d, want 422", code)
	}
	if info, _ := s.info(a); info.Coins != 1000+100-n {
		t.Fatalf("coins = %d, want %d", info.Coins, 1000+100-n)
	}
	mustAudit(t, url, 2)
}

// TestIdempotencyKeyReusedAfterRetention: a key older than the retention
// period is no longer honoured: reusing it applies the request afresh (its
// stored row is replaced), and the process keeps serving. Expired keys are
// purged at start.
func TestIdempotencyKeyReusedAfterRetention(t *testing.T) {
	url := mustDatabase(t)
	s := mustStart(t, testConfig(url))
	a, _ := s.auth("xa", "pw"), s.auth("xb", "pw")
	if code, body := s.keyed("GET", "/api/buy/cup", a, "k1", nil); code != 200 {
		t.Fatalf("buy: %d %s", code, body)
	}
	if code, body := s.keyed("POST", "/api/sendCoin", a, "k2", map[string]any{"toUser": "xb", "amount": 100}); code != 200 {
		t.Fatalf("send: %d %s", code, body)
	}
	s.close()
	pool := mustPool(t, url)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '25 hours'`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (user_name, key, kind, amount, created_at, shard)
VALUES ('xb', 'stale', 'transferred', 1, now() - interval '30 hours', merch_shard('xb'))`); err != nil {
		t.Fatal(err)
	}
	s2 := mustStart(t, testConfig(url))
	if code, body := s2.keyed("GET", "/api/buy/cup", a, "k1", nil); code != 200 {
		t.Fatalf("buy with an expired key: %d %s", code, body)
	}
	if code, body := s2.keyed("POST", "/api/sendCoin", a, "k2", map[string]any{"toUser": "xb", "amount": 100}); code != 200 {
		t.Fatalf("send with an expired key: %d %s", code, body)
	}
	// Now they are live again: replays change nothing.
	if code, _ := s2.keyed("GET", "/api/buy/cup", a, "k1", nil); code != 200 {
		t.Fatal("replay failed")
	}
	if info, _ := s2.info(a); info.Coins != 1000-2*20-2*100 {
		t.Fatalf("coins = %d, want %d", info.Coins, 1000-2*20-2*100)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys WHERE created_at < now() - interval '24 hours'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d expired keys not purged", n)
		}
		time.Sleep(20 * time.Millisecond) // polls the purge, which runs at start
	}
	var live int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&live); err != nil || live != 2 {
		t.Fatalf("keys = %d, %v; want k1 and k2", live, err)
	}
	mustAudit(t, url, 2)
}

func itoa(i int) string { return strconv.Itoa(i) }
