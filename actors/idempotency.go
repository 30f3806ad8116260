package actors

import (
	"context"
	"errors"
	"log/slog"
)

// ErrKeyInFlight: a request with the same idempotency key is still being
// processed; the caller should retry later to learn its outcome.
var ErrKeyInFlight = errors.New("a request with this idempotency key is in progress")

// KeysPerUserMax bounds the idempotency keys remembered per user: memory per
// resident actor stays bounded; the oldest key is forgotten first. The store
// keeps keys for KeyRetention; LoadUser returns at most this many.
const KeysPerUserMax = 1000

// KeyedRequest is a committed keyed change, as stored durably with it.
type KeyedRequest struct {
	Key    string
	Kind   RecordKind
	Item   ItemID
	Peer   string
	Amount Coins
}

// keyEntry is what an actor remembers of one key: the request it came with
// (so reuse with a different request is refused), and its outcome.
type keyEntry struct {
	req     KeyedRequest
	pending bool  // journaled, not yet committed
	err     error // final outcome when not pending (nil: applied)
}

// keyTable remembers a user's recent idempotency keys. Owned by the actor.
// Business refusals (e.g. insufficient coins) are remembered in memory only:
// after a restart such a key is evaluated afresh, which is safe because the
// refused request changed nothing.
type keyTable struct {
	m     map[string]*keyEntry
	order []string // insertion order, for eviction
	// evicted: some keys of this user are no longer in memory (the table
	// overflowed, or loading stopped at KeysPerUserMax). A key not found
	// here may then still be in the store: the facade checks there first.
	evicted bool
}

// errKeyCheck asks the facade to look the key up in the store before the
// actor treats the request as new (see System.keyed).
var errKeyCheck = errors.New("actors: idempotency key must be checked in the store")

func outcomeOf(r *request) KeyedRequest {
	o := KeyedRequest{Key: r.key, Amount: r.amount, Item: r.item, Kind: Purchased}
	if r.op == opSend {
		o.Kind, o.Peer, o.Item = Transferred, r.peerName, 0
	} else {
		o.Amount = r.item.Price()
	}
	return o
}

// lookup returns (true, outcome) when r's key was seen before.
func (t *keyTable) lookup(r *request) (bool, error) {
	e := t.m[r.key]
	if e == nil {
		if t.evicted && !r.keyChecked {
			return true, errKeyCheck
		}
		return false, nil
	}
	if e.req != outcomeOf(r) {
		return true, ErrKeyReused
	}
	if e.pending {
		return true, ErrKeyInFlight
	}
	return true, e.err
}

// add remembers a key; pending says whether its record is in the journal.
func (t *keyTable) add(o KeyedRequest, pending bool, err error) {
	if t.m == nil {
		t.m = make(map[string]*keyEntry, 4)
	}
	if _, ok := t.m[o.Key]; !ok {
		t.order = append(t.order, o.Key)
	}
	t.m[o.Key] = &keyEntry{req: o, pending: pending, err: err}
	for len(t.order) > KeysPerUserMax {
		old := t.order[0]
		if e := t.m[old]; e != nil && e.pending {
			break // never forget a key whose record is in flight
		}
		delete(t.m, old)
		t.order = t.order[1:]
		t.evicted = true
	}
}

// finish records the final outcome of a pending key; a change that did not
// happen (journal refused or closed) forgets the key so a retry may apply it.
func (t *keyTable) finish(key string, applied bool) {
	e := t.m[key]
	if e == nil {
		return
	}
	if applied {
		e.pending = false
		return
	}
	delete(t.m, key)
	for i, k := range t.order {
		if k == key {
			t.order = append(t.order[:i], t.order[i+1:]...)
			break
		}
	}
}

// keyed runs a keyed change. Normally the actor decides from its table of
// recent keys. When that table has forgotten keys, the actor answers
// errKeyCheck for an unknown key; the store is asked (here, on the caller's
// goroutine, never inside an actor) and the change is replayed or re-sent
// as checked. No change with the key can reach the store in between: it
// would be pending in the actor's table, which never forgets pending keys.
func (s *System) keyed(user string, want KeyedRequest, until int64, rid []byte, write func(checked bool) error) error {
	err := write(false)
	if !errors.Is(err, errKeyCheck) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), remaining(until))
	got, found, err := s.cfg.Store.KeyApplied(ctx, user, want.Key)
	cancel()
	switch {
	case err != nil:
		slog.Warn("idempotency key lookup failed", "user", user, "request_id", string(rid), "err", err)
		return ErrUnavailable
	case found && got != want:
		s.metrics.KeyReplayed(ErrKeyReused)
		return ErrKeyReused
	case found:
		s.metrics.KeyReplayed(nil)
		return nil // applied before: replay its success
	}
	return write(true)
}
