package actors

// Transfers to users of shards another node owns, and the fold that
// completes them. One writer per row everywhere:
//
//  1. The facade finds the recipient's shard not held here. It checks that
//     the recipient exists (Names, cached: users are never deleted) — it
//     never loads the recipient: another node owns that user.
//  2. The sender's actor validates and reserves as for any transfer and
//     appends ONE record TransferredOut{from, to, amount}: the sender's
//     owner debits the sender, writes the ledger row and a pending credit
//     in one fenced transaction. Money is conserved at that commit: Σ
//     balances + Σ pending + Σ inventory value = 1000 × users.
//  3. On commit the debit becomes durable and the sender's actor answers.
//     The facade then nudges the recipient's owner (Credits.Nudge) and
//     waits a bounded time (CreditWait) for its fold, so a 200 normally
//     still means "visible in both users' info". A lost nudge costs only
//     latency: the recipient's owner polls and folds on takeover too.
//  4. The recipient's owner folds: one Folded record per shard; its batch
//     deletes the shard's pending credits and adds them to the balances in
//     one statement (each row is deleted once: a duplicate fold, or one by
//     a node that lost the lease — fenced anyway — finds nothing). The
//     fold reports what it applied, with each receiver's fold counter.
//  5. A live receiver applies a fold's credits only if the fold is the
//     next one after the state it loaded (counter + 1); an older one is
//     already in its state (it loaded after the commit); a gap means it
//     missed one: it is rebuilt from the store.

import (
	"context"
	"errors"
)

// Names tells whether a user exists, for transfers to users another node
// owns (persist.Store.UserExists).
type Names interface {
	UserExists(ctx context.Context, name string) (bool, error)
}

// Credits reaches the owner of a shard to fold its pending credits now
// (internal HTTP in a cluster). Nudge returns once the fold committed, or
// with an error; either way the credit is durable and will be folded.
type Credits interface {
	Nudge(ctx context.Context, shard Shard) error
}

// knownPerStripeMax bounds the names remembered as existing per directory
// stripe (when full the stripe's table is dropped: it is only a cache).
const knownPerStripeMax = 4096

// sendRemote is sendCoins for a recipient whose shard another node owns.
func (s *System) sendRemote(from, to string, amount Coins, key string, checked bool, until int64, rid []byte) error {
	if err := s.recipientExists(to, until); err != nil {
		return err
	}
	h, err := s.resolvePinned(from, nil, int32(s.cfg.InflightPerUserMax), until, rid)
	if err != nil {
		return err
	}
	r := getRequest()
	r.op, r.owner, r.held, r.amount, r.remote = opSend, h, heldOwner, amount, true
	r.peerName, r.key, r.keyChecked = to, key, checked
	r.setRequestID(rid)
	if err := s.write(h, r, until); err != nil {
		return err
	}
	s.nudge(ShardOf(to), until)
	return nil
}

// recipientExists checks a user another node owns, through the positive
// cache, the absent cache and then Names.
func (s *System) recipientExists(name string, until int64) error {
	sp := s.dir.stripe(name)
	sp.mu.RLock()
	_, known := sp.known[name]
	sp.mu.RUnlock()
	if known {
		return nil
	}
	sp.mu.Lock()
	absent := sp.isAbsent(name, monotime())
	sp.mu.Unlock()
	if absent || s.cfg.Names == nil {
		return ErrUnknownRecipient
	}
	ctx, cancel := context.WithTimeout(context.Background(), remaining(until))
	ok, err := s.cfg.Names.UserExists(ctx, name)
	cancel()
	switch {
	case err != nil:
		return ErrUnavailable
	case !ok:
		sp.markAbsent(&handle{name: name}, s.cfg.AbsentTTL)
		return ErrUnknownRecipient
	}
	sp.mu.Lock()
	if len(sp.known) >= knownPerStripeMax {
		clear(sp.known)
	}
	sp.known[name] = struct{}{}
	sp.mu.Unlock()
	return nil
}

// nudge asks the recipient's owner to fold now and waits up to CreditWait
// (and the request's deadline) for it.
func (s *System) nudge(sh Shard, until int64) {
	if s.cfg.Credits == nil {
		return
	}
	wait := min(s.cfg.CreditWait, remaining(until))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.cfg.Credits.Nudge(ctx, sh); err != nil {
		s.creditWaitsMissed.Add(1)
	}
}

// Fold folds the pending credits of those of shards this node holds and
// applies them to the resident receivers. nil once the folds committed.
func (s *System) Fold(ctx context.Context, shards []Shard) error {
	var credits []Credit
	done := make(registration, len(shards))
	n := 0
	for _, sh := range shards {
		e, ok := s.lease(sh)
		if !ok {
			continue
		}
		rec := Record{Kind: Folded, Shard: sh, Epoch: e, Credits: &credits, Done: done}
		if err := s.journal.Append(&rec); err != nil {
			return errors.Join(err, s.waitFolds(ctx, done, n, shards))
		}
		n++
	}
	if err := s.waitFolds(ctx, done, n, shards); err != nil {
		return err
	}
	s.applyCredits(credits)
	return nil
}

// waitFolds waits for n fold completions. If the wait ends first, a fold
// may still commit with nobody to tell the live receivers: their actors
// are rebuilt from the store.
func (s *System) waitFolds(ctx context.Context, done registration, n int, shards []Shard) error {
	var first error
	for range n {
		select {
		case err := <-done:
			if first == nil {
				first = err
			}
		case <-ctx.Done():
			s.rebuildShards(shards)
			return ctx.Err()
		}
	}
	if first != nil && !errors.Is(first, ErrNotOwner) {
		s.rebuildShards(shards) // ErrNotDurable: the fold may have committed
	}
	return first
}

// rebuildShards marks the resident actors of shards for a rebuild.
func (s *System) rebuildShards(shards []Shard) {
	s.dir.forEach(func(h *handle) {
		for _, sh := range shards {
			if h.shard == sh {
				h.broken.Store(true)
			}
		}
	})
}

// applyCredits hands each resident receiver the credits a fold applied to
// it, as one message.
func (s *System) applyCredits(credits []Credit) {
	for len(credits) > 0 {
		to := credits[0].To
		var mine, rest []Credit
		for _, c := range credits {
			if c.To == to {
				mine = append(mine, c)
			} else {
				rest = append(rest, c)
			}
		}
		credits = rest
		h := s.dir.stripe(to).get(to)
		if h == nil || !h.isReady() || h.err != nil || !s.current(h) {
			continue // not resident: it loads the folded state
		}
		if dead, _ := h.pin(0); dead {
			continue
		}
		r := &request{op: opFold, peer: h, held: heldPeer, credits: mine, folds: mine[0].Folds,
			reply: make(chan reply, 1)}
		h.enqueue(r)
	}
}

// folded applies a fold's credits if it is the next fold after the
// actor's state (see the header, step 5).
func (u *user) folded(r *request) {
	switch {
	case u.broken || r.folds <= u.folds:
	case r.folds == u.folds+1:
		for _, c := range r.credits {
			if err := u.wallet.ApplyReceived(c.From, c.Amount); err != nil {
				panic("actors: invariant: folded credit cannot be applied: " + err.Error())
			}
		}
		u.folds = r.folds
		u.info = nil
	default: // a fold was missed
		u.broken = true
		u.h.broken.Store(true)
		u.info = nil
	}
	u.respond(r, nil)
}

// CreditWaitsMissed returns how many transfers to other owners answered
// before their fold was confirmed (still durable; folded later).
func (s *System) CreditWaitsMissed() int64 { return s.creditWaitsMissed.Load() }
