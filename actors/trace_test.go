package actors

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"merch/internal/logtest"
)

// TestLogLinesNameTheRequest: the few log lines a client request can cause
// inside the actors — its user failed to load, its actor panicked, its
// key could not be looked up — name the request's id (X-Request-Id).
func TestLogLinesNameTheRequest(t *testing.T) {
	check := func(t *testing.T, l *logtest.Buffer, line, id string) {
		t.Helper()
		for _, s := range strings.Split(l.String(), "\n") {
			if strings.Contains(s, line) && strings.Contains(s, "request_id="+id) {
				return
			}
		}
		t.Fatalf("no %q line with request_id=%s:\n%s", line, id, l.String())
	}
	t.Run("load failed", func(t *testing.T) {
		l := logtest.Capture(t)
		e := mustNewEnv(t, testConfig(), liveJournal)
		e.store.Put("alice", stateWith(1000))
		e.store.SetLoadErr("alice", errInjected)
		if _, err := e.sys.InfoTraced("alice", []byte("req-load")); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Info = %v, want ErrUnavailable", err)
		}
		check(t, l, "load user failed", "req-load")
	})
	t.Run("panic", func(t *testing.T) {
		l := logtest.Capture(t)
		e := mustNewEnv(t, testConfig(), liveJournal, "alice")
		e.journal.SetRefuse(func(rec *Record) error { panic("injected: journal append panicked") })
		if err := e.sys.BuyTraced("alice", socks, "", []byte("req-panic")); !errors.Is(err, ErrInternal) {
			t.Fatalf("Buy = %v, want ErrInternal", err)
		}
		check(t, l, "actor panic", "req-panic")
	})
	t.Run("key lookup failed", func(t *testing.T) {
		l := logtest.Capture(t)
		e := mustNewEnv(t, testConfig(), liveJournal, "bob")
		st := stateWith(1000)
		for i := range KeysPerUserMax {
			st.Keys = append(st.Keys, KeyedRequest{Key: fmt.Sprintf("old%d", i), Kind: Transferred, Peer: "bob", Amount: 1})
		}
		e.store.Put("alice", st)
		e.store.SetKeyErr(errInjected)
		if err := e.sys.SendBytesTraced("alice", []byte("bob"), 1, "new", []byte("req-key")); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Send = %v, want ErrUnavailable", err)
		}
		check(t, l, "idempotency key lookup failed", "req-key")
	})
}
