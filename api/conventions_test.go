package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"merch/actors"
	"merch/internal/logtest"
)

// TestChangeAnswersHaveNoBody: the 200 of buy and sendCoin has no body and
// no Content-Type (docs/API.md: "200, no body"); info and auth keep JSON.
func TestChangeAnswersHaveNoBody(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	tok := e.mustAuth(t, "alice", "pw")
	e.mustAuth(t, "bob", "pw")
	for _, r := range []req{
		{method: "GET", path: "/api/buy/cup", token: tok},
		{method: "GET", path: "/api/buy/pen", token: tok, headers: []string{"Idempotency-Key", "k1"}},
		{method: "POST", path: "/api/sendCoin", token: tok, body: `{"toUser":"bob","amount":1}`},
	} {
		got := e.do(t, r)
		if got.status != 200 || got.body != "" || got.contentType != "" {
			t.Errorf("%s %s: %d, Content-Type %q, body %q; want 200, none, none", r.method, r.path, got.status,
				got.contentType, got.body)
		}
	}
	if got := e.do(t, req{method: "GET", path: "/api/info", token: tok}); got.contentType != "application/json" {
		t.Errorf("info: Content-Type %q", got.contentType)
	}
}

// TestAuthAnswersAreNotCached: every answer of POST /api/auth, the token's
// above all, says Cache-Control: no-store.
func TestAuthAnswersAreNotCached(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	for _, body := range []string{authBody("carol", "pw"), authBody("carol", "pw"), authBody("carol", "wrong"), `{}`} {
		if r := e.do(t, req{method: "POST", path: "/api/auth", body: body}); r.cacheControl != "no-store" {
			t.Errorf("auth %s: %d with Cache-Control %q, want no-store", body, r.status, r.cacheControl)
		}
	}
}

// TestRequestID: a sane client id is echoed; an absent one is made, unique
// per request; an insane one (too long, characters that need quoting) is
// replaced; every kind of answer carries one, the request errors fasthttp
// answers too.
func TestRequestID(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	tok := e.mustAuth(t, "dave", "pw")
	sane := []string{"abc", "0f8e2c1a-1b2c-4d5e-8f90-123456789abc", "req:42/x=y@z", strings.Repeat("a", requestIDLenMax)}
	for _, id := range sane {
		if r := e.do(t, req{method: "GET", path: "/api/info", token: tok, headers: []string{"X-Request-Id", id}}); r.requestID != id {
			t.Errorf("sane id %q answered %q", id, r.requestID)
		}
	}
	seen := map[string]bool{}
	insane := []string{"", strings.Repeat("a", requestIDLenMax+1), "a b", `a"b`, "a\\b", "a,b", "ü"}
	for _, id := range insane {
		r := e.do(t, req{method: "GET", path: "/api/info", token: tok, headers: []string{"X-Request-Id", id}})
		if r.requestID == id || !saneRequestID([]byte(r.requestID)) || seen[r.requestID] {
			t.Errorf("insane id %q answered %q (seen before: %v)", id, r.requestID, seen[r.requestID])
		}
		seen[r.requestID] = true
	}
	for _, r := range []req{
		{method: "GET", path: "/api/info"},                    // 401
		{method: "GET", path: "/nothing"},                     // 404
		{method: "POST", path: "/api/info", token: tok},       // 405
		{method: "GET", path: "/api/buy/nothing", token: tok}, // 400
		{method: "GET", path: "/api/buy/cup", token: tok},     // 200
		{method: "GET", path: "/openapi.yaml"},
	} {
		got := e.do(t, r)
		if !saneRequestID([]byte(got.requestID)) || seen[got.requestID] {
			t.Errorf("%s %s: %d with X-Request-Id %q (seen before: %v)", r.method, r.path, got.status, got.requestID,
				seen[got.requestID])
		}
		seen[got.requestID] = true
	}
	huge := e.raw(t, "GET /api/info HTTP/1.1\r\nHost: merch.test\r\nX-Big: "+strings.Repeat("a", HeaderMax)+"\r\n\r\n")
	if huge.status != 431 || !saneRequestID([]byte(huge.requestID)) {
		t.Errorf("headers too large: %d with X-Request-Id %q", huge.status, huge.requestID)
	}
}

// TestForwardPassesRequestID: the owner node gets the client's id (or the
// one the first node made), and the client gets it back whatever the
// owner answered.
func TestForwardPassesRequestID(t *testing.T) {
	t.Parallel()
	p := startPeer(t, false, false)
	e, token := forwardingEnv(t, p)
	mine := e.do(t, req{method: "GET", path: "/api/buy/cup", token: token, headers: []string{"X-Request-Id", "client-1"}})
	made := e.do(t, req{method: "GET", path: "/api/buy/cup", token: token})
	if mine.status != 200 || made.status != 200 {
		t.Fatalf("forwarded: %d, %d", mine.status, made.status)
	}
	got := p.requestIDs()
	if len(got) != 2 || got[0] != "client-1" || got[1] != made.requestID || made.requestID == "" {
		t.Fatalf("the owner got ids %q, want [client-1 %s]", got, made.requestID)
	}
	if mine.requestID != "client-1" {
		t.Errorf("the client got %q back, want client-1", mine.requestID)
	}
}

// TestUnexpectedErrorLogNamesRequest: the log line of a 500 names the
// request's id.
func TestUnexpectedErrorLogNamesRequest(t *testing.T) {
	buf := logtest.Capture(t)
	ctx := mustCtx(t, "GET", "/api/info", "", "")
	ctx.Request.Header.Set("X-Request-Id", "req-77")
	setRequestID(ctx)
	writeError(ctx, errors.New("boom"))
	if ctx.Response.StatusCode() != 500 || !strings.Contains(buf.String(), "request_id=req-77") {
		t.Fatalf("%d, log %q: want 500 and request_id=req-77", ctx.Response.StatusCode(), buf.String())
	}
}

// TestErrorBodyIsJSON: error bodies are JSON whatever the message holds —
// quotes, backslashes, control characters, invalid UTF-8, non-Latin
// letters, HTML — and decode to the message (invalid bytes as U+FFFD).
func TestErrorBodyIsJSON(t *testing.T) {
	t.Parallel()
	msgs := []string{
		`say "hi" \ back`, "nul\x00 bell\x07 esc\x1b del\x7f tab\t nl\n",
		"bad utf-8 \xff\xfe \xc3", "surrogate \xed\xa0\x80", "пароль ✓ 🙂", "<b>&amp;</b>", "\u2028\u2029",
	}
	for _, msg := range msgs {
		body := errorBody(msg)
		var got struct{ Errors string }
		if !json.Valid(body) || json.Unmarshal(body, &got) != nil {
			t.Errorf("errorBody(%q) = %s: not JSON", msg, body)
			continue
		}
		valid := utf8.ValidString(msg)
		if valid && got.Errors != msg || !valid && !strings.Contains(got.Errors, "\uFFFD") {
			t.Errorf("errorBody(%q) decodes to %q", msg, got.Errors)
		}
	}
	for _, r := range errorReplies {
		if !json.Valid(r.body) {
			t.Errorf("table body %s is not JSON", r.body)
		}
	}
}

// TestActorLogLinesNameTheRequest: the handlers hand the request's id to
// the actors, so the lines a request causes there name it: a user that
// failed to load (info), an actor that panicked (buy, sendCoin).
func TestActorLogLinesNameTheRequest(t *testing.T) {
	buf := logtest.Capture(t)
	e := mustEnv(t, envConfig{})
	tok := e.mustAuth(t, "gil", "pw")
	e.mustAuth(t, "hal", "pw")
	e.store.Put("ivy", actors.UserState{Coins: actors.StartingCoins})
	e.store.SetLoadErr("ivy", errors.New("injected load failure"))
	ivy, err := e.tokens.Issue("ivy")
	if err != nil {
		t.Fatal(err)
	}
	e.journal.SetRefuse(func(*actors.Record) error { panic("injected: journal append panicked") })
	for _, tc := range []struct {
		r      req
		status int
		line   string
	}{
		{req{method: "GET", path: "/api/info", token: ivy, headers: []string{"X-Request-Id", "req-info"}}, 503, "load user failed"},
		{req{method: "GET", path: "/api/buy/cup", token: tok, headers: []string{"X-Request-Id", "req-buy"}}, 500, "actor panic"},
		{req{method: "POST", path: "/api/sendCoin", token: tok, body: `{"toUser":"hal","amount":1}`,
			headers: []string{"X-Request-Id", "req-send"}}, 500, "actor panic"},
	} {
		id := tc.r.headers[1]
		if r := e.do(t, tc.r); r.status != tc.status {
			t.Fatalf("%s %s: %d %s, want %d", tc.r.method, tc.r.path, r.status, r.body, tc.status)
		}
		found := false
		for _, s := range strings.Split(buf.String(), "\n") {
			found = found || strings.Contains(s, tc.line) && strings.Contains(s, "request_id="+id)
		}
		if !found {
			t.Errorf("%s %s: no %q line with request_id=%s:\n%s", tc.r.method, tc.r.path, tc.line, id, buf.String())
		}
	}
}
