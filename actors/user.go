package actors

import (
	"errors"
	"log/slog"
	"runtime/debug"

	"github.com/anthdm/hollywood/actor"
)

// ErrInternal: an unexpected failure inside an actor; the actor is rebuilt
// from the store.
var ErrInternal = errors.New("internal error")

// user is the hollywood receiver for one user: it owns the wallet, the cached
// /api/info body and the idempotency keys, and processes messages serially.
// Receive never blocks: no database, no waiting on other actors.
type user struct {
	h      *handle
	sys    *System
	wallet Wallet
	keys   keyTable
	folds  int64    // pending-credit folds applied (see remote.go)
	info   []byte   // cached body; nil when stale; never mutated once built
	cur    *request // the request being handled, until handed on or answered
	broken bool     // a panic left the state suspect; see recoverPanic
}

// Receive implements actor.Receiver.
func (u *user) Receive(c *actor.Context) {
	r, ok := c.Message().(*request)
	if !ok {
		return // lifecycle messages: state was loaded before Spawn
	}
	start := monotime()
	u.h.queued.Add(-1)
	u.sys.depth.Add(-1)
	u.sys.metrics.MailboxWait(durationNS(start - r.enqueued))
	kind := r.kind() // r may be reused by its caller once answered
	u.dispatch(r)
	u.sys.metrics.Processed(kind, durationNS(monotime()-start))
}

func (u *user) dispatch(r *request) {
	u.cur = r
	defer u.recoverPanic()
	switch r.phase {
	case phaseNew:
		switch r.op {
		case opInfo:
			u.answerInfo(r)
		case opBuy:
			u.buy(r)
		case opSend:
			u.transfer(r)
		case opFold:
			u.folded(r)
		}
	case phaseCommitted:
		u.committed(r)
	case phaseCredit:
		u.credit(r)
	}
	u.cur = nil
}

// respond answers r and forgets it.
func (u *user) respond(r *request, err error) {
	u.cur = nil
	r.respond(err, nil)
}

func (u *user) answerInfo(r *request) {
	if u.broken {
		u.respond(r, ErrUnavailable)
		return
	}
	if u.info == nil {
		u.info = appendInfo(make([]byte, 0, u.wallet.infoSizeHint()), &u.wallet)
	}
	u.cur = nil
	r.respond(nil, u.info)
}

func (u *user) buy(r *request) {
	if u.broken {
		u.respond(r, ErrUnavailable)
		return
	}
	if !r.item.Valid() {
		u.respond(r, ErrUnknownItem)
		return
	}
	if u.replay(r) {
		return
	}
	// ReserveItem is the wallet operation the fuzz target, the allocation
	// budget and the benchmark drive: keep the buy path on it.
	if err := u.wallet.ReserveItem(r.item); err != nil {
		u.refuse(r, err)
		return
	}
	price := r.item.Price()
	rec := Record{Kind: Purchased, User: u.h.name, Item: r.item, Amount: price, Key: r.key, Epoch: u.h.epoch, Done: r}
	if err := u.sys.journal.Append(&rec); err != nil {
		u.wallet.Release(price)
		u.respond(r, err)
		return
	}
	u.pending(r)
}

// replay answers r from its idempotency key if the key was seen before.
func (u *user) replay(r *request) bool {
	if r.key == "" {
		return false
	}
	seen, err := u.keys.lookup(r)
	if seen {
		if !errors.Is(err, errKeyCheck) {
			u.sys.metrics.KeyReplayed(err)
		}
		u.respond(r, err)
	}
	return seen
}

// refuse answers a business refusal, remembering it under r's key.
func (u *user) refuse(r *request, err error) {
	if r.key != "" {
		u.keys.add(outcomeOf(r), false, err)
	}
	u.respond(r, err)
}

// pending notes that r's record is in the journal; its outcome arrives as
// phaseCommitted.
func (u *user) pending(r *request) {
	if r.key != "" {
		u.keys.add(outcomeOf(r), true, nil)
	}
	u.cur = nil
}

// committed handles the journal's outcome for this actor's own record.
func (u *user) committed(r *request) {
	if errors.Is(r.err, ErrNotDurable) {
		u.unknown(r)
		return
	}
	applied := r.err == nil
	if r.key != "" {
		u.keys.finish(r.key, applied)
	}
	amount := r.amount
	if r.op == opBuy {
		amount = r.item.Price()
	}
	if !applied {
		if !u.broken {
			u.wallet.Release(amount)
		}
		u.respond(r, r.err)
		return
	}
	if r.op == opSend {
		u.debited(r)
		return
	}
	if !u.broken {
		u.wallet.ApplyPurchase(r.item)
		u.info = nil
	}
	u.respond(r, nil)
}

// unknown handles a record whose outcome the journal could not learn: it
// may have committed. Its reservation is never freed and its key stays
// pending (a retry gets ErrKeyInFlight); the actor stops serving and is
// rebuilt from the store, which has the truth, as after a panic. A
// transfer's recipient is rebuilt too, so it shows the credit if it
// committed (until then it shows less than the truth, never more).
func (u *user) unknown(r *request) {
	u.broken = true
	u.h.broken.Store(true)
	u.info = nil
	if r.op == opSend && !r.remote {
		r.peer.broken.Store(true)
	}
	u.respond(r, r.err)
}

// recoverPanic turns a panic in Receive into an answer and a rebuild: the
// wallet may be half-updated, so the actor refuses new work, finishes what
// the journal still owes it (those outcomes are durable facts), and is
// passivated by the janitor once nothing is pinned; the next request loads
// the user afresh from the store. hollywood's own restart is not used: it
// would rebuild the receiver from its producer and drop the message.
func (u *user) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	u.broken = true
	u.h.broken.Store(true)
	u.info = nil
	u.sys.metrics.Panicked()
	var rid string
	if u.cur != nil {
		rid = u.cur.RequestID()
	}
	slog.Error("actor panic; rebuilding user from store", "user", u.h.name, "request_id", rid, "panic", v,
		"stack", string(debug.Stack()))
	if r := u.cur; r != nil {
		u.cur = nil
		if r.phase == phaseCommitted && r.op == opSend && !r.remote && r.err == nil && r.held&heldPeer != 0 {
			// The transfer is durable: the recipient must still apply it
			// and answer, whatever happened to this actor.
			r.phase = phaseCredit
			r.releaseOwner()
			r.peer.enqueue(r)
			return
		}
		r.respond(ErrInternal, nil)
	}
}
