package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"merch/actors"
	"merch/actors/actorstest"
)

// checkReply checks the status, the JSON content type of any body, the error
// shape of every 4xx/5xx, and (if set) a substring of the body.
func checkReply(t *testing.T, r reply, wantStatus int, wantBody string) {
	t.Helper()
	if r.status != wantStatus {
		t.Fatalf("status %d, want %d (body %s)", r.status, wantStatus, r.body)
	}
	if r.body != "" && r.contentType != "application/json" {
		t.Errorf("Content-Type %q, want application/json (body %s)", r.contentType, r.body)
	}
	if r.status >= 400 {
		mustErrorBody(t, r)
	}
	if (r.status == 429 || r.status == 503) && r.retryAfter == "" {
		t.Errorf("%d without Retry-After", r.status)
	}
	if !strings.Contains(r.body, wantBody) {
		t.Errorf("body %s, want it to contain %q", r.body, wantBody)
	}
}

const newUserInfo = `{"coins":1000,"inventory":[],"coinHistory":{"received":[],"sent":[]}}`

func TestAuth(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	e.mustAuth(t, "existing", "right password")

	long := strings.Repeat("a", actors.UsernameLenMax)
	tests := []struct {
		name   string
		body   string
		status int
		errSub string // part of the error message, for 4xx
	}{
		{"new user", authBody("newbie", "secret"), 200, ""},
		{"existing user right password", authBody("existing", "right password"), 200, ""},
		{"existing user wrong password", authBody("existing", "wrong password"), 401, "wrong password"},
		{"password differs in case", authBody("existing", "Right password"), 401, "wrong password"},
		{"username 64 chars", authBody(long, "p"), 200, ""},
		{"username allowed punctuation", authBody("A.b_c-9", "p"), 200, ""},
		{"password spaces punctuation cyrillic", authBody("ivan", "пароль with spaces!"), 200, ""},
		{"password 72 bytes", authBody("pw72", strings.Repeat("x", 72)), 200, ""},
		{"password 72 bytes of 2-byte runes", authBody("pw72ru", strings.Repeat("п", 36)), 200, ""},
		{"password escaped quote and unicode", `{"username":"esc","password":"a\"b\u00e9"}`, 200, ""},
		{"password single byte", authBody("onebyte", "x"), 200, ""},

		{"empty body", ``, 400, "malformed"},
		{"malformed JSON", `{"username":"x",`, 400, "malformed"},
		{"trailing garbage", `{"username":"x","password":"y"} x`, 400, "malformed"},
		{"array", `["x","y"]`, 400, "malformed"},
		{"string", `"x"`, 400, "malformed"},
		{"null", `null`, 400, "malformed"},
		{"empty object", `{}`, 400, "required"},
		{"missing password", `{"username":"x"}`, 400, "required"},
		{"missing username", `{"password":"x"}`, 400, "required"},
		{"empty username", `{"username":"","password":"x"}`, 400, "required"},
		{"empty password", `{"username":"x","password":""}`, 400, "required"},
		{"username number", `{"username":1,"password":"x"}`, 400, "required"},
		{"username null", `{"username":null,"password":"x"}`, 400, "required"},
		{"password bool", `{"username":"x","password":true}`, 400, "required"},
		{"password object", `{"username":"x","password":{}}`, 400, "required"},
		{"field names are case-sensitive", `{"Username":"x","Password":"y"}`, 400, "required"},
		{"username with space", authBody("a b", "x"), 400, "username"},
		{"username with slash", authBody("a/b", "x"), 400, "username"},
		{"username non-ASCII", authBody("иван", "x"), 400, "username"},
		{"username with NUL", `{"username":"a\u0000b","password":"x"}`, 400, "username"},
		{"username 65 chars", authBody(long+"a", "x"), 400, "username"},
		{"password 73 bytes", authBody("pw73", strings.Repeat("x", 73)), 400, "password"},
		{"password 74 bytes of 2-byte runes", authBody("pw74", strings.Repeat("п", 37)), 400, "password"},
		{"password invalid UTF-8", "{\"username\":\"utf\",\"password\":\"a\xffb\"}", 400, "password"},
		{"password truncated UTF-8", "{\"username\":\"utf2\",\"password\":\"\xd0\"}", 400, "password"},
		{"password lone surrogate escape", `{"username":"sur","password":"\ud800"}`, 400, "password"},
		{"password surrogate pair", `{"username":"pair","password":"\ud83d\ude00"}`, 200, ""},
		{"duplicate username", `{"username":"dup1","password":"x","username":"dup2"}`, 400, "malformed"},
		{"raw control char in password", "{\"username\":\"ctl\",\"password\":\"a\x01\"}", 400, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, req{method: "POST", path: "/api/auth", body: tt.body})
			checkReply(t, r, tt.status, tt.errSub)
			if tt.status != 200 {
				return
			}
			var out map[string]any
			if err := json.Unmarshal([]byte(r.body), &out); err != nil {
				t.Fatalf("body %s: %v", r.body, err)
			}
			tok, ok := out["token"].(string)
			if !ok || len(out) != 1 || strings.Count(tok, ".") != 2 {
				t.Fatalf("body %s, want {\"token\": JWT}", r.body)
			}
			var in struct{ Username string }
			if err := json.Unmarshal([]byte(tt.body), &in); err != nil {
				t.Fatal(err)
			}
			if user, err := e.tokens.Verify([]byte(tok)); err != nil || user != in.Username {
				t.Fatalf("token is for %q (%v), want %q", user, err, in.Username)
			}
		})
	}
	// Rejected names were not created; accepted new names have 1000 coins.
	for _, tt := range tests {
		var in struct{ Username string }
		if json.Unmarshal([]byte(tt.body), &in) != nil || in.Username == "" {
			continue
		}
		st, ok := e.store.State(in.Username)
		switch {
		case tt.status == 200 && (!ok || st.Coins != actors.StartingCoins):
			t.Errorf("%s: user %q stored %v with %d coins, want 1000", tt.name, in.Username, ok, st.Coins)
		case tt.status == 400 && ok:
			t.Errorf("%s: user %q was created by a refused request", tt.name, in.Username)
		}
	}
}

func TestAuthNewUserHasStartingState(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	tok := e.mustAuth(t, "fresh", "pw")
	_, body := e.mustInfo(t, tok)
	if body != newUserInfo {
		t.Fatalf("info %s, want %s", body, newUserInfo)
	}
	// Logging in again does not re-create or reset the user.
	e.do(t, req{method: "GET", path: "/api/buy/pen", token: tok})
	tok2 := e.mustAuth(t, "fresh", "pw")
	if ib, _ := e.mustInfo(t, tok2); ib.Coins != 990 {
		t.Fatalf("coins after re-login %d, want 990", ib.Coins)
	}
	if n := e.store.Registrations("fresh"); n != 1 {
		t.Fatalf("%d registrations, want 1", n)
	}
}

// badAuthHeaders are refused with 401 on every protected endpoint.
func badAuthHeaders(e *testEnv, t *testing.T) []struct{ name, header string } {
	ghost, err := e.tokens.Issue("ghost") // valid, but no such user
	if err != nil {
		t.Fatal(err)
	}
	return []struct{ name, header string }{
		{"missing", ""},
		{"Basic scheme", "Basic YWxpY2U6cHc="},
		{"Bearer without token", "Bearer"},
		{"Bearer with spaces only", "Bearer    "},
		{"token without Bearer", ghost},
		{"garbage token", "Bearer not.a.jwt"},
		{"garbage one part", "Bearer abc"},
		{"unknown user", "Bearer " + ghost},
	}
}

func TestInfo(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	tok := e.mustAuth(t, "reader", "pw")

	t.Run("200 new user exact body", func(t *testing.T) {
		r := e.do(t, req{method: "GET", path: "/api/info", token: tok})
		checkReply(t, r, 200, "")
		if r.body != newUserInfo {
			t.Fatalf("body %s, want %s", r.body, newUserInfo)
		}
	})
	t.Run("lower-case bearer scheme", func(t *testing.T) {
		r := e.do(t, req{method: "GET", path: "/api/info", headers: []string{"Authorization", "bearer " + tok}})
		checkReply(t, r, 200, `"coins":1000`)
	})
	for _, tt := range badAuthHeaders(e, t) {
		t.Run("401 "+tt.name, func(t *testing.T) {
			r := e.do(t, req{method: "GET", path: "/api/info", headers: []string{"Authorization", tt.header}})
			checkReply(t, r, 401, "")
		})
	}
	t.Run("200 after purchases and transfers", func(t *testing.T) {
		other := e.mustAuth(t, "writer", "pw")
		for _, p := range []string{"/api/buy/cup", "/api/buy/cup", "/api/buy/book"} {
			checkReply(t, e.do(t, req{method: "GET", path: p, token: tok}), 200, "")
		}
		checkReply(t, e.do(t, req{method: "POST", path: "/api/sendCoin", token: tok,
			body: `{"toUser":"writer","amount":160}`}), 200, "")
		checkReply(t, e.do(t, req{method: "POST", path: "/api/sendCoin", token: other,
			body: `{"toUser":"reader","amount":30}`}), 200, "")
		_, body := e.mustInfo(t, tok)
		want := `{"coins":780,"inventory":[{"type":"cup","quantity":2},{"type":"book","quantity":1}],` +
			`"coinHistory":{"received":[{"fromUser":"writer","amount":30}],"sent":[{"toUser":"writer","amount":160}]}}`
		if body != want {
			t.Fatalf("info %s\nwant %s", body, want)
		}
	})
}

func TestSendCoin(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	alice := e.mustAuth(t, "alice", "pw")
	e.mustAuth(t, "bob", "pw")

	tests := []struct {
		name   string
		body   string
		status int
		errSub string
	}{
		{"empty body", ``, 400, "malformed"},
		{"malformed", `{"toUser":"bob"`, 400, "malformed"},
		{"not JSON", `toUser=bob&amount=1`, 400, "malformed"},
		{"array", `[{"toUser":"bob","amount":1}]`, 400, "malformed"},
		{"empty object", `{}`, 400, "required"},
		{"missing amount", `{"toUser":"bob"}`, 400, "required"},
		{"missing toUser", `{"amount":10}`, 400, "required"},
		{"empty toUser", `{"toUser":"","amount":10}`, 400, "required"},
		{"toUser number", `{"toUser":7,"amount":10}`, 400, "required"},
		{"amount string", `{"toUser":"bob","amount":"10"}`, 400, "required"},
		{"amount null", `{"toUser":"bob","amount":null}`, 400, "required"},
		{"amount bool", `{"toUser":"bob","amount":true}`, 400, "required"},
		{"amount 0", `{"toUser":"bob","amount":0}`, 400, "amount"},
		{"amount -0", `{"toUser":"bob","amount":-0}`, 400, "amount"},
		{"amount negative", `{"toUser":"bob","amount":-5}`, 400, "amount"},
		{"amount fraction", `{"toUser":"bob","amount":1.5}`, 400, "amount"},
		{"amount 10.0", `{"toUser":"bob","amount":10.0}`, 400, "amount"},
		{"amount exponent", `{"toUser":"bob","amount":1e2}`, 400, "amount"},
		{"amount 1e30", `{"toUser":"bob","amount":1e30}`, 400, "amount"},
		{"amount int64 overflow", `{"toUser":"bob","amount":9223372036854775808}`, 400, "amount"},
		{"amount huge", `{"toUser":"bob","amount":100000000000000000000000000000}`, 400, "amount"},
		{"amount int64 max", `{"toUser":"bob","amount":9223372036854775807}`, 400, "insufficient"},
		{"unknown recipient", `{"toUser":"nobody","amount":10}`, 400, "recipient"},
		{"recipient invalid name", `{"toUser":"no body","amount":10}`, 400, "recipient"},
		{"recipient differs in case", `{"toUser":"Bob","amount":10}`, 400, "recipient"},
		{"self", `{"toUser":"alice","amount":10}`, 400, "yourself"},
		{"insufficient", `{"toUser":"bob","amount":1001}`, 400, "insufficient"},
		{"amount leading zero", `{"toUser":"bob","amount":010}`, 400, "malformed"},
		{"amount plus sign", `{"toUser":"bob","amount":+10}`, 400, "malformed"},
		{"duplicate amount", `{"toUser":"bob","amount":1,"amount":1000}`, 400, "malformed"},
		{"duplicate toUser", `{"toUser":"bob","toUser":"alice","amount":1}`, 400, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, req{method: "POST", path: "/api/sendCoin", token: alice, body: tt.body})
			checkReply(t, r, tt.status, tt.errSub)
		})
	}
	// No refused request changed anything.
	for _, name := range []string{"alice", "bob"} {
		if st, _ := e.store.State(name); st.Coins != 1000 {
			t.Fatalf("%s has %d coins after refused transfers, want 1000", name, st.Coins)
		}
	}
	for _, tt := range badAuthHeaders(e, t) {
		t.Run("401 "+tt.name, func(t *testing.T) {
			r := e.do(t, req{method: "POST", path: "/api/sendCoin", body: `{"toUser":"bob","amount":1}`,
				headers: []string{"Authorization", tt.header}})
			checkReply(t, r, 401, "")
		})
	}

	t.Run("200 exact balance, then visible to both", func(t *testing.T) {
		r := e.do(t, req{method: "POST", path: "/api/sendCoin", token: alice, body: `{"toUser":"bob","amount":1000}`})
		checkReply(t, r, 200, "")
		a, _ := e.mustInfo(t, alice)
		b, _ := e.mustInfo(t, e.mustAuth(t, "bob", "pw"))
		if a.Coins != 0 || b.Coins != 2000 {
			t.Fatalf("coins alice %d bob %d, want 0 and 2000", a.Coins, b.Coins)
		}
		if len(a.CoinHistory.Sent) != 1 || a.CoinHistory.Sent[0].ToUser != "bob" || a.CoinHistory.Sent[0].Amount != 1000 ||
			len(b.CoinHistory.Received) != 1 || b.CoinHistory.Received[0].FromUser != "alice" {
			t.Fatalf("history alice %+v bob %+v", a.CoinHistory, b.CoinHistory)
		}
		r = e.do(t, req{method: "POST", path: "/api/sendCoin", token: alice, body: `{"toUser":"bob","amount":1}`})
		checkReply(t, r, 400, "insufficient")
	})
}

func TestBuy(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	for _, id := range actors.Items() {
		t.Run(id.Name(), func(t *testing.T) {
			tok := e.mustAuth(t, "buyer-"+id.Name(), "pw")
			checkReply(t, e.do(t, req{method: "GET", path: "/api/buy/" + id.Name(), token: tok}), 200, "")
			ib, _ := e.mustInfo(t, tok)
			if ib.Coins != 1000-id.Price() || len(ib.Inventory) != 1 ||
				ib.Inventory[0].Type != id.Name() || ib.Inventory[0].Quantity != 1 {
				t.Fatalf("after buying %s: %+v", id.Name(), ib)
			}
		})
	}
	tok := e.mustAuth(t, "shopper", "pw")
	for _, path := range []string{"/api/buy/unknown", "/api/buy/PEN", "/api/buy/pen%20", "/api/buy/pink_hoody"} {
		t.Run("400 "+path, func(t *testing.T) {
			checkReply(t, e.do(t, req{method: "GET", path: path, token: tok}), 400, "unknown item")
		})
	}
	for _, tt := range badAuthHeaders(e, t) {
		t.Run("401 "+tt.name, func(t *testing.T) {
			r := e.do(t, req{method: "GET", path: "/api/buy/pen", headers: []string{"Authorization", tt.header}})
			checkReply(t, r, 401, "")
			if tt.name == "unknown user" {
				return // an unknown item is refused before the user is resolved
			}
			r = e.do(t, req{method: "GET", path: "/api/buy/unknown", headers: []string{"Authorization", tt.header}})
			checkReply(t, r, 401, "")
		})
	}
	t.Run("insufficient", func(t *testing.T) {
		for i, want := range []int{200, 200, 400} {
			r := e.do(t, req{method: "GET", path: "/api/buy/pink-hoody", token: tok})
			if r.status != want {
				t.Fatalf("purchase %d: %d %s, want %d", i+1, r.status, r.body, want)
			}
		}
		checkReply(t, e.do(t, req{method: "GET", path: "/api/buy/pen", token: tok}), 400, "insufficient")
		_, body := e.mustInfo(t, tok)
		want := `{"coins":0,"inventory":[{"type":"pink-hoody","quantity":2}],"coinHistory":{"received":[],"sent":[]}}`
		if body != want {
			t.Fatalf("info %s, want %s", body, want)
		}
	})
}

func TestRoutingErrors(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	tok := e.mustAuth(t, "router", "pw")
	tests := []struct {
		method, path string
		status       int
		errSub       string
	}{
		{"GET", "/", 404, "not found"},
		{"GET", "/api", 404, "not found"},
		{"GET", "/api/unknown", 404, "not found"},
		{"GET", "/api/info/", 404, "not found"},
		{"GET", "/api/buy", 404, "not found"},
		{"GET", "/api/buy/", 404, "not found"},
		{"GET", "/api/buy/pen/extra", 404, "not found"},
		{"POST", "/api/auth/", 404, "not found"},
		{"GET", "/API/INFO", 404, "not found"},
		{"GET", "/api/auth", 405, "method"},
		{"PUT", "/api/auth", 405, "method"},
		{"POST", "/api/info", 405, "method"},
		{"GET", "/api/sendCoin", 405, "method"},
		{"DELETE", "/api/sendCoin", 405, "method"},
		{"POST", "/api/buy/pen", 405, "method"},
		{"POST", "/api/buy/unknown", 405, "method"},
		{"GET", "/healthz", 404, "not found"},
		{"GET", "/readyz", 404, "not found"},
		{"GET", "/metrics", 404, "not found"},
		{"GET", "/debug/pprof/", 404, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := e.do(t, req{method: tt.method, path: tt.path, token: tok})
			checkReply(t, r, tt.status, tt.errSub)
		})
	}
}

// TestServerErrors covers 500 and 503: a failure the service cannot make
// durable is never a 2xx, and the reservation is released.
func TestServerErrors(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	tok := e.mustAuth(t, "unlucky", "pw")
	e.mustAuth(t, "peer", "pw")
	boom := errors.New("disk on fire at /var/lib/secret")
	tests := []struct {
		name   string
		refuse error // Append's answer
		fail   error // the record's completion
		status int
		errSub string
	}{
		{"journal queue full", actors.ErrOverloaded, nil, 503, "overloaded"},
		{"journal closed", actors.ErrClosed, nil, 503, "shutting down"},
		{"unexpected failure", nil, boom, 500, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.refuse != nil {
				e.journal.SetRefuse(func(*actors.Record) error { return tt.refuse })
				defer e.journal.SetRefuse(nil)
			}
			if tt.fail != nil {
				e.journal.SetFail(func(*actors.Record) error { return tt.fail })
				defer e.journal.SetFail(nil)
			}
			for _, r := range []req{
				{method: "GET", path: "/api/buy/pen", token: tok},
				{method: "POST", path: "/api/sendCoin", token: tok, body: `{"toUser":"peer","amount":10}`},
				{method: "POST", path: "/api/auth", body: authBody("never-"+strings.ReplaceAll(tt.name, " ", "-"), "pw")},
			} {
				got := e.do(t, r)
				checkReply(t, got, tt.status, tt.errSub)
				if strings.Contains(got.body, "fire") {
					t.Fatalf("internal error text leaked: %s", got.body)
				}
			}
		})
	}
	// Nothing changed, and the reservations were released.
	e.journal.SetRefuse(nil)
	e.journal.SetFail(nil)
	checkReply(t, e.do(t, req{method: "POST", path: "/api/sendCoin", token: tok, body: `{"toUser":"peer","amount":1000}`}), 200, "")
	if ib, _ := e.mustInfo(t, tok); ib.Coins != 0 || len(ib.Inventory) != 0 {
		t.Fatalf("after failures: %+v", ib)
	}
}

// TestNotDurableIs503: a change whose outcome the journal could not learn
// answers 503 (retry with the Idempotency-Key to learn it), never 200 or
// 500.
func TestNotDurableIs503(t *testing.T) {
	t.Parallel()
	unknown := actors.ErrNotDurable
	for _, r := range []req{
		{method: "GET", path: "/api/buy/pen"},
		{method: "POST", path: "/api/sendCoin", body: `{"toUser":"peer","amount":10}`},
		{method: "POST", path: "/api/auth", body: authBody("never", "pw")},
	} {
		e := mustEnv(t, envConfig{})
		r.token = e.mustAuth(t, "payer", "pw")
		e.mustAuth(t, "peer", "pw")
		e.journal.SetFail(func(*actors.Record) error { return unknown })
		checkReply(t, e.do(t, r), 503, "durable")
	}
}

type counterparty struct {
	User   string
	Amount actors.Coins
}

func history(ib actorstest.Info) (received, sent []counterparty) {
	for _, r := range ib.CoinHistory.Received {
		received = append(received, counterparty{r.FromUser, r.Amount})
	}
	for _, s := range ib.CoinHistory.Sent {
		sent = append(sent, counterparty{s.ToUser, s.Amount})
	}
	cmp := func(a, b counterparty) int { return strings.Compare(a.User, b.User) }
	slices.SortFunc(received, cmp)
	slices.SortFunc(sent, cmp)
	return received, sent
}

func TestHistoryGrouping(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	tok := map[string]string{}
	for _, n := range []string{"ann", "ben", "cat"} {
		tok[n] = e.mustAuth(t, n, "pw")
	}
	transfers := []struct {
		from, to string
		amount   int
	}{
		{"ann", "ben", 10}, {"ann", "ben", 20}, {"ben", "ann", 5}, {"ann", "cat", 7},
		{"cat", "ann", 3}, {"cat", "ann", 4}, {"ben", "ann", 1}, {"ann", "ben", 100},
	}
	for _, tr := range transfers {
		r := e.do(t, req{method: "POST", path: "/api/sendCoin", token: tok[tr.from],
			body: fmt.Sprintf(`{"toUser":%q,"amount":%d}`, tr.to, tr.amount)})
		checkReply(t, r, 200, "")
	}
	tests := []struct {
		user           string
		coins          actors.Coins
		received, sent []counterparty
	}{
		{"ann", 1000 - 137 + 13, []counterparty{{"ben", 6}, {"cat", 7}}, []counterparty{{"ben", 130}, {"cat", 7}}},
		{"ben", 1000 + 130 - 6, []counterparty{{"ann", 130}}, []counterparty{{"ann", 6}}},
		{"cat", 1000 + 7 - 7, []counterparty{{"ann", 7}}, []counterparty{{"ann", 7}}},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			ib, body := e.mustInfo(t, tok[tt.user])
			received, sent := history(ib)
			if ib.Coins != tt.coins || !slices.Equal(received, tt.received) || !slices.Equal(sent, tt.sent) {
				t.Fatalf("info %s\nwant coins %d received %v sent %v", body, tt.coins, tt.received, tt.sent)
			}
		})
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	tok := e.mustAuth(t, "idem", "pw")
	e.mustAuth(t, "idem-peer", "pw")
	buy := func(path, key string) reply {
		return e.do(t, req{method: "GET", path: path, token: tok, headers: []string{"Idempotency-Key", key}})
	}
	send := func(amount int, key string) reply {
		return e.do(t, req{method: "POST", path: "/api/sendCoin", token: tok, headers: []string{"Idempotency-Key", key},
			body: fmt.Sprintf(`{"toUser":"idem-peer","amount":%d}`, amount)})
	}
	steps := []struct {
		name   string
		do     func() reply
		status int
		coins  actors.Coins // balance afterwards
	}{
		{"buy pen with key k1", func() reply { return buy("/api/buy/pen", "k1") }, 200, 990},
		{"same buy same key", func() reply { return buy("/api/buy/pen", "k1") }, 200, 990},
		{"same buy same key again", func() reply { return buy("/api/buy/pen", "k1") }, 200, 990},
		{"other item same key", func() reply { return buy("/api/buy/cup", "k1") }, 422, 990},
		{"transfer same key", func() reply { return send(5, "k1") }, 422, 990},
		{"same buy other key", func() reply { return buy("/api/buy/pen", "k2") }, 200, 980},
		{"transfer with key k3", func() reply { return send(30, "k3") }, 200, 950},
		{"same transfer same key", func() reply { return send(30, "k3") }, 200, 950},
		{"other amount same key", func() reply { return send(31, "k3") }, 422, 950},
		{"key of 64 printable chars", func() reply { return buy("/api/buy/pen", strings.Repeat("~", 64)) }, 200, 940},
		{"refusal is remembered", func() reply { return send(5000, "k4") }, 400, 940},
		{"refusal replayed", func() reply { return send(5000, "k4") }, 400, 940},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := s.do()
			checkReply(t, r, s.status, "")
			if ib, _ := e.mustInfo(t, tok); ib.Coins != s.coins {
				t.Fatalf("coins %d, want %d", ib.Coins, s.coins)
			}
		})
	}
	if ib, _ := e.mustInfo(t, tok); len(ib.Inventory) != 1 || ib.Inventory[0].Quantity != 3 {
		t.Fatalf("inventory %+v, want 3 pens", ib.Inventory)
	}

	// Bad keys, written raw: a client library might clean them up.
	const keyErr, parseErr = "Idempotency-Key", "bad request" // parseErr: fasthttp refuses the header itself
	badKeys := []struct{ name, value, errSub string }{
		{"empty", "", keyErr},
		{"65 chars", strings.Repeat("k", 65), keyErr},
		{"inner space", "a b", keyErr},
		{"tab", "a\tb", keyErr},
		{"control char", "a\x01b", parseErr},
		{"DEL", "a\x7fb", parseErr},
		{"non-ASCII", "ключ", keyErr},
	}
	for _, k := range badKeys {
		for _, r := range []struct{ method, path, body string }{
			{"GET", "/api/buy/pen", ""},
			{"POST", "/api/sendCoin", `{"toUser":"idem-peer","amount":1}`},
		} {
			t.Run("400 "+k.name+" "+r.path, func(t *testing.T) {
				got := e.raw(t, r.method+" "+r.path+" HTTP/1.1\r\nHost: merch.test\r\nAuthorization: Bearer "+tok+
					"\r\nIdempotency-Key: "+k.value+"\r\nContent-Length: "+fmt.Sprint(len(r.body))+"\r\n\r\n"+r.body)
				checkReply(t, got, 400, k.errSub)
			})
		}
	}
	if ib, _ := e.mustInfo(t, tok); ib.Coins != 940 {
		t.Fatalf("coins %d after bad keys, want 940", ib.Coins)
	}
}

func TestOperationalEndpoints(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	notReady := errors.New("journal not writable")
	checkReply(t, e.do(t, req{method: "GET", path: "/nope"}), 404, "")
	tests := []struct {
		name     string
		path     string
		notReady bool
		status   int
		body     string
		json     bool
	}{
		{"healthz", "/healthz", false, 200, `{"status":"ok"}`, true},
		{"readyz ready", "/readyz", false, 200, `{"status":"ok"}`, true},
		{"readyz not ready", "/readyz", true, 503, `{"errors":`, true},
		{"healthz while not ready", "/healthz", true, 200, `{"status":"ok"}`, true},
		{"metrics", "/metrics", false, 200, `merch_http_requests_total{code="404",route="other"} 1`, false},
		{"metrics histogram", "/metrics", false, 200, `merch_http_request_duration_seconds_bucket{route="info",le="5e-05"}`, false},
		{"pprof", "/debug/pprof/", false, 200, `goroutine`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.notReady {
				e.readyErr.Store(&notReady)
				defer e.readyErr.Store(nil)
			}
			r := e.adminGet(t, tt.path)
			if tt.json {
				checkReply(t, r, tt.status, tt.body)
				if (tt.status == 503) != (r.retryAfter == "1") {
					t.Fatalf("Retry-After %q with status %d", r.retryAfter, tt.status)
				}
			} else if r.status != tt.status || !strings.Contains(r.body, tt.body) {
				t.Fatalf("%d %.300s, want %d containing %s", r.status, r.body, tt.status, tt.body)
			}
			if strings.Contains(r.body, "journal not writable") {
				t.Fatalf("readiness error text leaked: %s", r.body)
			}
		})
	}
}

// TestIdempotencyKeyInFlight: a retry that arrives while the first request's
// record is still in the journal gets 409; once committed, the retry gets
// the first outcome and nothing is applied twice.
func TestIdempotencyKeyInFlight(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	tok := e.mustAuth(t, "retry", "pw")
	e.mustAuth(t, "retry-peer", "pw")
	tests := []struct {
		name  string
		r     req
		coins actors.Coins
	}{
		{"buy", req{method: "GET", path: "/api/buy/book", token: tok, headers: []string{"Idempotency-Key", "slow-buy"}}, 950},
		{"send", req{method: "POST", path: "/api/sendCoin", token: tok, headers: []string{"Idempotency-Key", "slow-send"},
			body: `{"toUser":"retry-peer","amount":50}`}, 900},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.journal.SetHold(true)
			resume := func() {
				e.journal.SetHold(false)
				e.journal.ReleaseAll(nil)
			}
			t.Cleanup(resume)
			first := make(chan reply, 1)
			go func() { first <- e.do(t, tt.r) }()
			e.journal.MustWaitHeld(t, 1)
			checkReply(t, e.do(t, tt.r), 409, "in progress")
			resume()
			select {
			case r := <-first:
				checkReply(t, r, 200, "")
			case <-time.After(failTimeout):
				t.Fatal("first request did not finish")
			}
			checkReply(t, e.do(t, tt.r), 200, "")
			if ib, _ := e.mustInfo(t, tok); ib.Coins != tt.coins {
				t.Fatalf("coins %d, want %d", ib.Coins, tt.coins)
			}
		})
	}
}

// TestStoreUnavailable: a user who cannot be loaded is a 503 (nothing
// changed), never a 401 or a fresh registration; service resumes by itself.
func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, envConfig{})
	hot := e.mustAuth(t, "hot", "pw")
	e.store.Put("cold", actors.UserState{PasswordHash: mustHash(t, "pw"), Coins: actors.StartingCoins})
	cold, err := e.tokens.Issue("cold")
	if err != nil {
		t.Fatal(err)
	}
	down := errors.New("connection refused")
	e.store.SetDown(down)
	tests := []struct {
		name   string
		r      req
		status int // while the store is down; 200 after
	}{
		{"auth of a stored user", req{method: "POST", path: "/api/auth", body: authBody("cold", "pw")}, 503},
		{"auth of a new name", req{method: "POST", path: "/api/auth", body: authBody("newcomer", "pw")}, 503},
		{"info", req{method: "GET", path: "/api/info", token: cold}, 503},
		{"buy", req{method: "GET", path: "/api/buy/pen", token: cold}, 503},
		{"send to a cold user", req{method: "POST", path: "/api/sendCoin", token: hot, body: `{"toUser":"cold","amount":1}`}, 503},
		{"resident user reads", req{method: "GET", path: "/api/info", token: hot}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, tt.r)
			checkReply(t, r, tt.status, "")
			if strings.Contains(r.body, "refused") {
				t.Fatalf("store error leaked: %s", r.body)
			}
		})
	}
	if _, ok := e.store.State("newcomer"); ok {
		t.Fatal("a name was registered while its state could not be loaded")
	}
	e.store.SetDown(nil)
	for _, tt := range tests {
		t.Run(tt.name+" after recovery", func(t *testing.T) {
			checkReply(t, e.do(t, tt.r), 200, "")
		})
	}
}

func TestNewConfig(t *testing.T) {
	e := mustEnv(t, envConfig{noHTTPServer: true})
	full := Config{System: e.sys, Tokens: e.tokens, Hasher: e.hasher, Limiter: e.limiter,
		Registry: prometheus.NewRegistry()}
	tests := []struct {
		name string
		mut  func(c *Config)
		ok   bool
	}{
		{"complete", func(*Config) {}, true},
		{"no system", func(c *Config) { c.System = nil }, false},
		{"no tokens", func(c *Config) { c.Tokens = nil }, false},
		{"no hasher", func(c *Config) { c.Hasher = nil }, false},
		{"no limiter", func(c *Config) { c.Limiter = nil }, false},
		{"no registry: no HTTP metrics", func(c *Config) { c.Registry = nil }, true},
		{"no registration limit", func(c *Config) { c.Registrations = nil }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := full
			c.Registry = prometheus.NewRegistry()
			tt.mut(&c)
			srv, err := New(c)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if srv == nil {
				return
			}
			// The server answers; operational endpoints are not public.
			for _, r := range []struct {
				path   string
				status int
			}{{"/healthz", 404}, {"/api/info", 401}, {"/metrics", 404}} {
				ctx := mustCtx(t, "GET", r.path, "", "")
				srv.Handler()(ctx)
				if ctx.Response.StatusCode() != r.status {
					t.Fatalf("GET %s: %d, want %d", r.path, ctx.Response.StatusCode(), r.status)
				}
			}
		})
	}
}

// TestMetricsUncommonCode: a status without a pre-resolved child is still
// counted.
func TestMetricsUncommonCode(t *testing.T) {
	e := mustEnv(t, envConfig{noHTTPServer: true})
	teapot := e.srv.wrap(routeOther, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(418) })
	for range 2 {
		teapot(mustCtx(t, "GET", "/teapot", "", ""))
	}
	r := e.adminGet(t, "/metrics")
	for _, want := range []string{`merch_http_requests_total{code="418",route="other"} 2`,
		`merch_http_request_duration_seconds_count{route="other"} 2`} {
		if !strings.Contains(r.body, want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
}
