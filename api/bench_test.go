package api

import (
	"testing"

	"github.com/valyala/fasthttp"

	"merch/actors"
)

// benchEnv is an environment whose journal commits at once, with a rich
// resident user "rich" (token cached) and a resident payee.
func benchEnv(b *testing.B) (*testEnv, string) {
	b.Helper()
	e := mustEnv(b, envConfig{syncJournal: true, noHTTPServer: true})
	st := actors.UserState{PasswordHash: mustHash(b, "pw"), Coins: actors.StartingCoins + benchCoins,
		Received: []actors.Counterparty{{User: "bank", Amount: benchCoins}}}
	e.store.Put("rich", st)
	e.store.Put("payee", st)
	tok, err := e.tokens.Issue("rich")
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"rich", "payee"} {
		if _, err := e.sys.Info(name); err != nil {
			b.Fatal(err)
		}
	}
	return e, tok
}

const benchCoins = actors.Coins(1) << 50

// benchHandler calls the handler directly on one prepared request.
func benchHandler(b *testing.B, method, path, body string, want int) {
	e, tok := benchEnv(b)
	h := e.srv.Handler()
	ctx := &fasthttp.RequestCtx{}
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	ctx.Request.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+tok)
	if body != "" {
		ctx.Request.SetBodyString(body)
	}
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		h(ctx)
		if ctx.Response.StatusCode() != want {
			b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

func BenchmarkInfo(b *testing.B) { benchHandler(b, "GET", "/api/info", "", 200) }

func BenchmarkBuy(b *testing.B) { benchHandler(b, "GET", "/api/buy/pen", "", 200) }

func BenchmarkSendCoin(b *testing.B) {
	benchHandler(b, "POST", "/api/sendCoin", `{"toUser":"payee","amount":1}`, 200)
}

func BenchmarkNotFound(b *testing.B) { benchHandler(b, "GET", "/api/nothing", "", 404) }

// BenchmarkInfoParallel measures contention: every goroutine reads the same
// user, so all requests queue at one actor.
func BenchmarkInfoParallel(b *testing.B) {
	e, tok := benchEnv(b)
	h := e.srv.Handler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := &fasthttp.RequestCtx{}
		ctx.Request.Header.SetMethod("GET")
		ctx.Request.SetRequestURI("/api/info")
		ctx.Request.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+tok)
		for pb.Next() {
			ctx.Response.Reset()
			h(ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Errorf("%d", ctx.Response.StatusCode())
				return
			}
		}
	})
}

// BenchmarkAuthLogin is a repeated login of a resident user whose digest is
// known: no bcrypt, one HMAC and a token signature.
func BenchmarkAuthLogin(b *testing.B) {
	e, _ := benchEnv(b)
	h := e.srv.Handler()
	ctx := &fasthttp.RequestCtx{}
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/api/auth")
	ctx.Request.SetBodyString(authBody("rich", "pw"))
	ctx.Response.Reset()
	h(ctx) // the first login runs bcrypt and remembers the digest
	hashes := e.hashes.Load()
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		h(ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	if e.hashes.Load() != hashes {
		b.Fatal("a repeated login ran bcrypt")
	}
}

func BenchmarkVerify(b *testing.B) {
	tk := mustTokens(b, 1<<40)
	tok, err := tk.Issue("alice")
	if err != nil {
		b.Fatal(err)
	}
	raw := []byte(tok)
	b.Run("cached", func(b *testing.B) {
		if _, err := tk.Verify(raw); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tk.Verify(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tk.parse(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	auth := []byte(authBody("alice", "correct horse battery staple"))
	send := []byte(`{"toUser":"bob","amount":100}`)
	b.Run("auth", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p := parsers.Get()
			if _, _, err := decodeAuth(p, auth); err != nil {
				b.Fatal(err)
			}
			parsers.Put(p)
		}
	})
	b.Run("send", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p := parsers.Get()
			if _, _, err := decodeSend(p, send); err != nil {
				b.Fatal(err)
			}
			parsers.Put(p)
		}
	})
}
