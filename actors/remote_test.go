package actors

import (
	"context"
	"errors"
	"testing"
	"time"
)

// creditsTo nudges another System: its Fold, as the internal HTTP nudge
// would reach it.
type creditsTo struct{ sys **System }

func (c creditsTo) Nudge(ctx context.Context, s Shard) error { return (*c.sys).Fold(ctx, []Shard{s}) }

// twoNodes builds two Systems over one store, each holding one user's
// shard, with transfers between them nudging the other.
func twoNodes(t *testing.T) (a, b *env, userA, userB string) {
	t.Helper()
	userA, userB = namesInTwoShards()
	store := Fakes.MustStore(t, userA, userB)
	var sysA, sysB *System
	cfgA, cfgB := testConfig(), testConfig()
	cfgA.Owner, cfgB.Owner = newOwner(map[Shard]uint64{ShardOf(userA): 1}), newOwner(map[Shard]uint64{ShardOf(userB): 1})
	cfgA.Names, cfgB.Names = store, store
	cfgA.Credits, cfgB.Credits = creditsTo{&sysB}, creditsTo{&sysA}
	cfgA.CreditWait, cfgB.CreditWait = failAfter, failAfter
	a = mustEnv(t, cfgA, store, Fakes.MustJournal(t, store, 64))
	b = mustEnv(t, cfgB, store, Fakes.MustJournal(t, store, 64))
	sysA, sysB = a.sys, b.sys
	return a, b, userA, userB
}

// TestRemoteTransfer: a transfer to a user another node owns debits the
// sender and leaves a pending credit in one record; the receiver's node
// folds it (nudged) before the sender's answer, so a success is visible
// on both sides; a keyed retry is a replay; nothing stays pending; the
// receiver is never loaded on the sender's node.
func TestRemoteTransfer(t *testing.T) {
	a, b, ua, ub := twoNodes(t)
	if _, err := b.sys.Info(ub); err != nil { // resident on its own node
		t.Fatal(err)
	}
	if err := a.sys.Send(ua, ub, 30, "k1"); err != nil {
		t.Fatal(err)
	}
	b.mustSee(t, ub, want{coins: 1030, received: map[string]Coins{ua: 30}})
	a.mustSee(t, ua, want{coins: 970, sent: map[string]Coins{ub: 30}})
	if err := a.sys.Send(ua, ub, 30, "k1"); err != nil { // replay
		t.Fatal(err)
	}
	if err := a.sys.Send(ua, ub, 31, "k1"); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("changed request under the key = %v", err)
	}
	a.mustSee(t, ua, want{coins: 970, sent: map[string]Coins{ub: 30}})
	if p := a.store.Pending(); p != 0 {
		t.Fatalf("%d coins left pending", p)
	}
	if n := a.store.LoadCount(ub); n != 1 {
		t.Fatalf("the receiver was loaded %d times (only by its own node)", n)
	}
	if err := a.sys.Send(ua, "nobody-at-all", 1, ""); ShardOf("nobody-at-all") != ShardOf(ua) && !errors.Is(err, ErrUnknownRecipient) {
		t.Fatalf("unknown remote recipient = %v", err)
	}
	// Back the other way, receiver not resident: it loads the folded state.
	if n := a.sys.PassivateIdle(0); n != 0 {
		t.Fatalf("%d resident on a", n)
	}
	if err := b.sys.Send(ub, ua, 5, ""); err != nil {
		t.Fatal(err)
	}
	a.mustSee(t, ua, want{coins: 975, sent: map[string]Coins{ub: 30}, received: map[string]Coins{ub: 5}})
	b.mustSee(t, ub, want{coins: 1025, received: map[string]Coins{ua: 30}, sent: map[string]Coins{ua: 5}})
}

// TestFoldAppliedOnce: a fold reported to an actor that loaded its state
// after the fold committed is not applied again; a gap rebuilds it.
func TestFoldAppliedOnce(t *testing.T) {
	a, b, ua, ub := twoNodes(t)
	// The credit is written but nobody nudges (no Credits on a this time).
	a.sys.cfg.Credits = nil
	if err := a.sys.Send(ua, ub, 40, ""); err != nil {
		t.Fatal(err)
	}
	if p := a.store.Pending(); p != 40 {
		t.Fatalf("pending %d, want 40", p)
	}
	// b folds; its actor for ub loads afterwards: it must show 40 once,
	// although the fold's report also reaches it.
	if err := b.sys.Fold(context.Background(), []Shard{ShardOf(ub)}); err != nil {
		t.Fatal(err)
	}
	b.mustSee(t, ub, want{coins: 1040, received: map[string]Coins{ua: 40}})
	h := b.sys.dir.stripe(ub).get(ub)
	dead, _ := h.pin(0)
	if dead {
		t.Fatal("actor gone")
	}
	stale := &request{op: opFold, peer: h, held: heldPeer, folds: 1,
		credits: []Credit{{From: ua, To: ub, Amount: 40, Folds: 1}}, reply: make(chan reply, 1)}
	h.enqueue(stale)
	<-stale.reply
	b.mustSee(t, ub, want{coins: 1040, received: map[string]Coins{ua: 40}})
	// A gap (fold 3 while the actor has 1): rebuilt from the store.
	if dead, _ := h.pin(0); dead {
		t.Fatal("actor gone")
	}
	gap := &request{op: opFold, peer: h, held: heldPeer, folds: 3,
		credits: []Credit{{From: ua, To: ub, Amount: 1, Folds: 3}}, reply: make(chan reply, 1)}
	h.enqueue(gap)
	<-gap.reply
	mustPoll(t, "the actor to be rebuilt", func() bool {
		b.sys.PassivateIdle(time.Hour)
		_, err := b.sys.Info(ub)
		return err == nil && b.store.LoadCount(ub) == 2
	})
	b.mustSee(t, ub, want{coins: 1040, received: map[string]Coins{ua: 40}})
}
