package api

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"merch/actors"
)

// TestShedReasons: every 503 writeError answers is counted under the
// reason of its most specific cause, and every 503 row of the error table
// has a reason of its own (none falls to "other").
func TestShedReasons(t *testing.T) {
	seen := map[string]bool{}
	for i := range shedReasonCount {
		r := shedReason(i)
		if seen[r] {
			t.Fatalf("reason %q twice", r)
		}
		seen[r] = true
	}
	for i, row := range shedReasons {
		var before [shedReasonCount]uint64
		for j := range before {
			before[j] = shedCounts[j].Load()
		}
		var ctx fasthttp.RequestCtx
		writeError(&ctx, row.err)
		if ctx.Response.StatusCode() != fasthttp.StatusServiceUnavailable {
			t.Errorf("%v answered %d", row.err, ctx.Response.StatusCode())
		}
		for j := range shedReasonCount {
			want := before[j]
			if j == i {
				want++
			}
			if got := shedCounts[j].Load(); got != want {
				t.Errorf("writeError(%v): %s = %d, want %d", row.err, shedReason(j), got, want)
			}
		}
	}
	for _, r := range errorReplies {
		if r.status != fasthttp.StatusServiceUnavailable {
			continue
		}
		other := shedCounts[shedOther].Load()
		countShed(r.err)
		if shedCounts[shedOther].Load() != other {
			t.Errorf("503 row %q has no shed reason", r.err)
		}
	}
	// A 4xx is not a shed.
	total := func() (n uint64) {
		for i := range shedCounts {
			n += shedCounts[i].Load()
		}
		return n
	}
	before := total()
	var ctx fasthttp.RequestCtx
	writeError(&ctx, actors.ErrKeyReused)
	if total() != before {
		t.Error("a 422 was counted as shed")
	}
}

// TestTokenCacheStats: a verification from the cache is a hit, the first
// one of a token a miss.
func TestTokenCacheStats(t *testing.T) {
	tokens, err := NewTokens([]byte("0123456789abcdef0123"), time.Hour, 16)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokens.Issue("alice")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := tokens.Verify([]byte(tok)); err != nil {
			t.Fatal(err)
		}
	}
	if hits, misses := tokens.CacheStats(); hits != 2 || misses != 1 {
		t.Fatalf("hits %d misses %d, want 2 and 1", hits, misses)
	}
}
