package actorstest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"merch/actors"
)

// TestStoreRefusesWhatPostgresRefuses: each record the schema would refuse
// is answered with an error and recorded as a violation; nothing changes.
func TestStoreRefusesWhatPostgresRefuses(t *testing.T) {
	tests := []struct {
		name string
		rec  actors.Record
		want string // substring of the violation
	}{
		{"negative balance", actors.Record{Kind: actors.Transferred, User: "alice", Peer: "bob", Amount: 1001}, "negative"},
		{"purchase beyond balance", actors.Record{Kind: actors.Purchased, User: "poor", Item: 10, Amount: 500}, "negative"},
		{"unknown buyer", actors.Record{Kind: actors.Purchased, User: "nobody", Item: 4, Amount: 10}, "unknown buyer"},
		{"unknown recipient", actors.Record{Kind: actors.Transferred, User: "alice", Peer: "nobody", Amount: 1}, "unknown"},
		{"self transfer", actors.Record{Kind: actors.Transferred, User: "alice", Peer: "alice", Amount: 1}, "self"},
		{"zero amount", actors.Record{Kind: actors.Transferred, User: "alice", Peer: "bob"}, "bad amount"},
		{"wrong price", actors.Record{Kind: actors.Purchased, User: "alice", Item: 4, Amount: 9}, "price"},
		{"registered rich", actors.Record{Kind: actors.Registered, User: "carol", Amount: 2000}, "registered with"},
		{"live key", actors.Record{Kind: actors.Purchased, User: "alice", Item: 4, Amount: 10, Key: "k1"}, "already stored"},
		{"unknown kind", actors.Record{Kind: actors.Folded + 1, User: "alice"}, "does not model"},
		{"transfer out to nobody", actors.Record{Kind: actors.TransferredOut, User: "alice", Peer: "nobody", Amount: 1}, "unknown sender or recipient"},
		{"transfer out over balance", actors.Record{Kind: actors.TransferredOut, User: "alice", Peer: "bob", Amount: 5000}, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore("alice", "bob")
			s.Put("poor", actors.UserState{Coins: 10})
			s.Put("alice", actors.UserState{Coins: actors.StartingCoins,
				Keys: []actors.KeyedRequest{{Key: "k1", Kind: actors.Purchased, Item: 2, Amount: 20}}})
			before, _ := s.State("alice")
			rec := tc.rec
			if err := s.Apply(&rec); err == nil {
				t.Fatal("applied")
			}
			v := s.Violations()
			if len(v) != 1 || !strings.Contains(v[0], tc.want) {
				t.Fatalf("violations %q, want one with %q", v, tc.want)
			}
			if after, _ := s.State("alice"); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("state changed: %+v → %+v", before, after)
			}
		})
	}
}

func TestStoreApplies(t *testing.T) {
	s := NewStore("alice", "bob")
	for _, rec := range []actors.Record{
		{Kind: actors.Purchased, User: "alice", Item: 4, Amount: 10, Key: "b1"},
		{Kind: actors.Transferred, User: "alice", Peer: "bob", Amount: 990, Key: "s1"},
		{Kind: actors.Registered, User: "carol", Amount: actors.StartingCoins, PasswordHash: []byte("h")},
	} {
		if err := s.Apply(&rec); err != nil {
			t.Fatal(err)
		}
	}
	dup := actors.Record{Kind: actors.Registered, User: "carol", Amount: actors.StartingCoins}
	if err := s.Apply(&dup); !errors.Is(err, actors.ErrUserExists) {
		t.Fatalf("second registration = %v, want ErrUserExists", err)
	}
	if v := s.Violations(); len(v) != 0 || s.Registrations("carol") != 1 {
		t.Fatalf("violations %q, %d registrations", v, s.Registrations("carol"))
	}
	a, _ := s.State("alice")
	b, _ := s.State("bob")
	if a.Coins != 0 || a.Inventory[4] != 1 || len(a.Keys) != 2 || fmt.Sprint(a.Sent) != "[{bob 990}]" ||
		b.Coins != 1990 || fmt.Sprint(b.Received) != "[{alice 990}]" {
		t.Fatalf("alice %+v, bob %+v", a, b)
	}
	if _, err := s.LoadUser(context.Background(), "carol"); err != nil {
		t.Fatal(err)
	}
	if k, ok, err := s.KeyApplied(context.Background(), "alice", "s1"); err != nil || !ok || k.Peer != "bob" {
		t.Fatalf("KeyApplied = %+v, %v, %v", k, ok, err)
	}
}

// TestStoreLoadsRecentKeys: LoadUser returns the KeysPerUserMax most recent
// keys, like persist; KeyApplied and State see them all.
func TestStoreLoadsRecentKeys(t *testing.T) {
	s := NewStore()
	st := actors.UserState{Coins: actors.StartingCoins}
	for i := range actors.KeysPerUserMax + 1 {
		st.Keys = append(st.Keys, actors.KeyedRequest{Key: fmt.Sprint(i), Kind: actors.Purchased, Item: 4, Amount: 10})
	}
	s.Put("alice", st)
	got, err := s.LoadUser(context.Background(), "alice")
	if err != nil || len(got.Keys) != actors.KeysPerUserMax || got.Keys[0].Key != "1" {
		t.Fatalf("LoadUser: %d keys from %q, %v", len(got.Keys), got.Keys[0].Key, err)
	}
	if _, ok, _ := s.KeyApplied(context.Background(), "alice", "0"); !ok {
		t.Fatal("KeyApplied lost the oldest key")
	}
	if all, _ := s.State("alice"); len(all.Keys) != actors.KeysPerUserMax+1 {
		t.Fatalf("State: %d keys", len(all.Keys))
	}
	if s.LoadCount("alice") != 1 || s.KeyChecks() != 1 {
		t.Fatalf("%d loads, %d key checks", s.LoadCount("alice"), s.KeyChecks())
	}
}

func TestStoreErrors(t *testing.T) {
	ctx := context.Background()
	down, broken := errors.New("down"), errors.New("broken")
	s := NewStore("alice", "bob")
	s.SetLoadErr("alice", broken)
	if _, err := s.LoadUser(ctx, "alice"); !errors.Is(err, broken) {
		t.Fatalf("LoadUser(alice) = %v", err)
	}
	if _, err := s.LoadUser(ctx, "bob"); err != nil {
		t.Fatalf("LoadUser(bob) = %v", err)
	}
	if _, err := s.LoadUser(ctx, "nobody"); !errors.Is(err, actors.ErrUnknownUser) {
		t.Fatalf("LoadUser(nobody) = %v", err)
	}
	s.SetLoadErr("alice", nil)
	s.SetDown(down)
	if _, err := s.LoadUser(ctx, "nobody"); !errors.Is(err, down) {
		t.Fatalf("LoadUser while down = %v", err)
	}
	if _, _, err := s.KeyApplied(ctx, "alice", "k"); !errors.Is(err, down) {
		t.Fatalf("KeyApplied while down = %v", err)
	}
	s.SetDown(nil)
	s.SetKeyErr(broken)
	if _, _, err := s.KeyApplied(ctx, "alice", "k"); !errors.Is(err, broken) {
		t.Fatalf("KeyApplied = %v", err)
	}
	gate := make(chan struct{})
	s.SetGate(gate)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.LoadUser(cctx, "alice"); !errors.Is(err, context.Canceled) {
		t.Fatalf("gated LoadUser with a cancelled context = %v", err)
	}
	close(gate)
	if _, err := s.LoadUser(ctx, "alice"); err != nil {
		t.Fatalf("LoadUser after the gate opened = %v", err)
	}
}
