package actors

// The transfer protocol. Two actors, no waiting, no locks:
//
//  1. The facade resolves both users and pins both handles (the recipient's
//     pin keeps its actor resident until the credit is applied), then sends
//     the request to the sender's actor.
//  2. The sender's actor validates (not self, amount > 0, available ≥
//     amount), reserves the amount and appends ONE record Transferred{from,
//     to, amount}: PostgreSQL applies both sides in one transaction, so a
//     transfer is all or nothing.
//  3. When the journal reports the outcome (phaseCommitted, back at the
//     sender): on failure the reservation is released and the caller gets
//     the error. On success the debit becomes durable and the same request
//     travels on to the recipient's actor (phaseCredit).
//  4. The recipient's actor applies the credit and only then answers the
//     caller. So a success means: durable, and visible in both users' info.
//
// Orderings: each actor is serial; the journal completes records in append
// order; a credit is sent only after its record committed, so no actor ever
// shows a change that is not durable. Opposite transfers (A→B while B→A)
// cannot deadlock because nobody waits for anybody.

func (u *user) transfer(r *request) {
	switch {
	case u.broken:
		u.respond(r, ErrUnavailable)
		return
	case r.peer == u.h:
		u.respond(r, ErrSelfTransfer)
		return
	case r.amount <= 0:
		u.respond(r, ErrBadAmount)
		return
	}
	if u.replay(r) {
		return
	}
	if err := u.wallet.Reserve(r.amount); err != nil {
		u.refuse(r, err)
		return
	}
	rec := Record{Kind: Transferred, User: u.h.name, Peer: r.peerName, Amount: r.amount, Key: r.key,
		Epoch: u.h.epoch, Done: r}
	if r.remote {
		rec.Kind = TransferredOut
	} else {
		rec.PeerEpoch = r.peer.epoch
	}
	if err := u.sys.journal.Append(&rec); err != nil {
		u.wallet.Release(r.amount)
		u.respond(r, err)
		return
	}
	u.pending(r)
}

// debited makes a committed transfer's debit durable and hands the request
// to the recipient. The sender's pin is released; the recipient's stays
// until it has applied the credit.
func (u *user) debited(r *request) {
	if !u.broken {
		u.wallet.ApplySent(r.peerName, r.amount)
		u.info = nil
	}
	if r.remote { // the receiver's owner applies the credit (remote.go)
		u.respond(r, nil)
		return
	}
	u.cur = nil
	r.phase = phaseCredit
	r.releaseOwner()
	r.peer.enqueue(r)
}

// credit applies a committed transfer at the recipient and answers the
// caller.
func (u *user) credit(r *request) {
	if !u.broken {
		if err := u.wallet.ApplyReceived(r.owner.name, r.amount); err != nil {
			panic("actors: invariant: committed credit cannot be applied: " + err.Error())
		}
		u.info = nil
	}
	u.respond(r, nil)
}
