package actors

import (
	"errors"
	"testing"
)

func TestLookup(t *testing.T) {
	e := mustNewEnv(t, testConfig(), liveJournal, "alice")
	acc, err := e.sys.Lookup("alice")
	if err != nil {
		t.Fatal(err)
	}
	if string(acc.PasswordHash()) != "hash:alice" || acc.Digest() != nil {
		t.Fatalf("hash %q digest %v", acc.PasswordHash(), acc.Digest())
	}
	d := &[32]byte{1, 2, 3}
	acc.SetDigest(d)
	again, err := e.sys.Lookup("alice")
	if err != nil || again.Digest() != d {
		t.Fatalf("digest not remembered: %v, %v", again.Digest(), err)
	}
	if got := e.store.LoadCount("alice"); got != 1 {
		t.Fatalf("LoadUser called %d times", got)
	}
	if _, err := e.sys.Lookup("nobody"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("Lookup(nobody) = %v", err)
	}
}
