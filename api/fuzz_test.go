package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"merch/actors"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; crashers found by
// `go test -fuzz` are committed there too.

// jsonFields decodes body with encoding/json as an object and returns its
// members by exact (case-sensitive) name, or false if it is not valid JSON.
func jsonFields(body []byte) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	return s, raw != nil && json.Unmarshal(raw, &s) == nil
}

// FuzzDecodeAuth: decodeAuth never panics, refuses with one of its own
// errors, and what it accepts follows the API rules and means the same to
// encoding/json.
func FuzzDecodeAuth(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		p := parsers.Get()
		defer parsers.Put(p)
		name, password, err := decodeAuth(p, body)
		if err != nil {
			switch err {
			case errMalformedJSON, errAuthFields, errBadUsername, errBadPassword:
			default:
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !actors.ValidUsername(name) {
			t.Fatalf("accepted username %q", name)
		}
		if len(password) < 1 || len(password) > actors.PasswordLenMax || !utf8.Valid(password) {
			t.Fatalf("accepted password %q", password)
		}
		m, ok := jsonFields(body)
		if !ok {
			t.Fatalf("accepted %q, which encoding/json refuses", body)
		}
		jn, ok1 := jsonString(m["username"])
		jp, ok2 := jsonString(m["password"])
		if !ok1 || !ok2 || jn != string(name) || jp != string(password) {
			t.Fatalf("decodeAuth(%q) = %q, %q; encoding/json reads %q, %q", body, name, password, jn, jp)
		}
	})
}

// FuzzDecodeSend: decodeSend never panics, refuses with one of its own
// errors, and what it accepts follows the API rules and means the same to
// encoding/json.
func FuzzDecodeSend(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		p := parsers.Get()
		defer parsers.Put(p)
		to, amount, err := decodeSend(p, body)
		if err != nil {
			switch err {
			case errMalformedJSON, errSendFields, actors.ErrBadAmount, actors.ErrUnknownRecipient:
			default:
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !actors.ValidUsername(to) || amount <= 0 {
			t.Fatalf("accepted toUser %q amount %d", to, amount)
		}
		m, ok := jsonFields(body)
		if !ok {
			t.Fatalf("accepted %q, which encoding/json refuses", body)
		}
		jt, ok := jsonString(m["toUser"])
		var n json.Number
		d := json.NewDecoder(bytes.NewReader(m["amount"]))
		d.UseNumber()
		if !ok || d.Decode(&n) != nil {
			t.Fatalf("accepted %q; encoding/json finds no toUser/amount", body)
		}
		ja, err := strconv.ParseInt(n.String(), 10, 64)
		if jt != string(to) || err != nil || ja != int64(amount) {
			t.Fatalf("decodeSend(%q) = %q, %d; encoding/json reads %q, %s", body, to, amount, jt, n)
		}
	})
}

// FuzzAuthorizationHeader sends arbitrary Authorization headers through the
// real handler: the answer is 200 exactly when the header carries the
// resident user's token, 401 (in the error shape) otherwise, never a 5xx or
// a panic. Tokens issued for any valid name verify as that name.
func FuzzAuthorizationHeader(f *testing.F) {
	const resident = "fuzzer"
	e := mustEnv(f, envConfig{noHTTPServer: true})
	e.store.Put(resident, actors.UserState{PasswordHash: mustHash(f, "pw"), Coins: actors.StartingCoins})
	h := e.srv.Handler()
	f.Fuzz(func(t *testing.T, prefix string, withToken bool, suffix, user string) {
		token := ""
		if withToken && actors.ValidUsername([]byte(user)) {
			var err error
			if token, err = e.tokens.Issue(user); err != nil {
				t.Fatal(err)
			}
			if got, err := e.tokens.Verify([]byte(token)); err != nil || got != user {
				t.Fatalf("token for %q verifies as %q, %v", user, got, err)
			}
		}
		header := prefix + token + suffix
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(fasthttp.MethodGet)
		ctx.Request.SetRequestURI("/api/info")
		ctx.Request.Header.Set(fasthttp.HeaderAuthorization, header)
		h(&ctx)

		// What was actually sent (fasthttp may drop a header it cannot store).
		sent := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
		want := fasthttp.StatusUnauthorized
		if token != "" && user == resident && len(sent) > 7 && bytes.EqualFold(sent[:7], []byte("Bearer ")) &&
			string(bytes.TrimSpace(sent[7:])) == token {
			want = fasthttp.StatusOK
		}
		status := ctx.Response.StatusCode()
		if status != want {
			t.Fatalf("Authorization %q: status %d, want %d (body %s)", header, status, want, ctx.Response.Body())
		}
		if status == fasthttp.StatusUnauthorized {
			var m map[string]string
			if err := json.Unmarshal(ctx.Response.Body(), &m); err != nil || m["errors"] == "" {
				t.Fatalf("401 body %q", ctx.Response.Body())
			}
		}
	})
}

// TestDecodersAgainstEncodingJSON runs the fuzz properties on fixed inputs
// that once disagreed with encoding/json, so a plain `go test` checks them.
func TestDecodersAgainstEncodingJSON(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		authErr  error // decodeAuth's answer (bodies carry both field sets)
		sendErr  error
		sendTo   string
		sendCoin actors.Coins
	}{
		{"plain", `{"username":"a","password":"b","toUser":"c","amount":5}`, nil, nil, "c", 5},
		{"escaped name", `{"username":"\u0061","password":"b","toUser":"\u0063","amount":5}`, nil, nil, "c", 5},
		{"escaped key", `{"\u0075sername":"a","password":"b","to\u0055ser":"c","amount":5}`, nil, nil, "c", 5},
		{"surrogate pair", `{"username":"a","password":"\ud83d\ude00","toUser":"c","amount":5}`, nil, nil, "c", 5},
		{"leading zero", `{"username":"a","password":"b","toUser":"c","amount":010}`, errMalformedJSON, errMalformedJSON, "", 0},
		{"plus sign", `{"username":"a","password":"b","toUser":"c","amount":+1}`, errMalformedJSON, errMalformedJSON, "", 0},
		{"unknown escape", `{"username":"a","password":"\x","toUser":"c","amount":5}`, errMalformedJSON, errMalformedJSON, "", 0},
		{"raw control char", "{\"username\":\"a\",\"password\":\"\x01\",\"toUser\":\"c\",\"amount\":5}", errMalformedJSON, errMalformedJSON, "", 0},
		{"raw control char before an escape", "{\"username\":\"a\",\"password\":\"\a\\b0000\",\"toUser\":\"c\",\"amount\":5}", errMalformedJSON, errMalformedJSON, "", 0},
		{"raw control char in another field", "{\"username\":\"a\",\"password\":\"b\",\"toUser\":\"c\",\"amount\":5,\"x\":\"\t\\n\"}", errMalformedJSON, errMalformedJSON, "", 0},
		{"whitespace between tokens", "{\t\"username\":\"a\",\r\n\"password\":\"b\\t\",\"toUser\":\"c\",\"amount\":5}", nil, nil, "c", 5},
		{"duplicate amount", `{"username":"a","password":"b","toUser":"c","amount":1,"amount":1000}`, nil, errMalformedJSON, "", 0},
		{"duplicate toUser", `{"username":"a","password":"b","toUser":"c","toUser":"d","amount":1}`, nil, errMalformedJSON, "", 0},
		{"duplicate via escape", `{"username":"a","password":"b","toUser":"c","to\u0055ser":"d","amount":1}`, nil, errMalformedJSON, "", 0},
		{"duplicate username", `{"username":"a","password":"b","username":"c","toUser":"c","amount":1}`, errMalformedJSON, nil, "c", 1},
		{"lone high surrogate", `{"username":"a","password":"\ud800","toUser":"c","amount":5}`, errBadPassword, nil, "c", 5},
		{"lone high surrogate upper case", `{"username":"a","password":"\uD83D","toUser":"c","amount":5}`, errBadPassword, nil, "c", 5},
		{"pair upper case", `{"username":"a","password":"\uD83D\uDE00","toUser":"c","amount":5}`, nil, nil, "c", 5},
		{"lone low surrogate", `{"username":"a","password":"x\udc00","toUser":"c","amount":5}`, errBadPassword, nil, "c", 5},
		{"high then non-low", `{"username":"a","password":"\ud800\u0041","toUser":"c","amount":5}`, errBadPassword, nil, "c", 5},
		{"escaped backslash then ud800", `{"username":"a","password":"\\ud800","toUser":"c","amount":5}`, nil, nil, "c", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parsers.Get()
			defer parsers.Put(p)
			if _, _, err := decodeAuth(p, []byte(tt.body)); !errors.Is(err, tt.authErr) {
				t.Fatalf("decodeAuth: %v, want %v", err, tt.authErr)
			}
			to, n, err := decodeSend(p, []byte(tt.body))
			if !errors.Is(err, tt.sendErr) || string(to) != tt.sendTo || n != tt.sendCoin {
				t.Fatalf("decodeSend: %q %d %v, want %q %d %v", to, n, err, tt.sendTo, tt.sendCoin, tt.sendErr)
			}
		})
	}
}
