package actors

import (
	"errors"
	"fmt"
)

// Domain and operating errors. They are allocated once, so error paths
// allocate nothing; compare with errors.Is. Package api maps each one to a
// status code and body.
var (
	ErrInsufficientCoins = errors.New("insufficient coins")
	ErrUnknownItem       = errors.New("unknown item")
	ErrUnknownUser       = errors.New("unknown user")
	ErrUnknownRecipient  = errors.New("recipient does not exist")
	ErrSelfTransfer      = errors.New("cannot send coins to yourself")
	ErrBadAmount         = errors.New("amount must be a positive integer")
	ErrUserExists        = errors.New("user already exists")
	// ErrOverloaded: a bounded queue is full; nothing was changed.
	ErrOverloaded = errors.New("service overloaded")
	// ErrNotDurable: the change was not confirmed in time. Its outcome is
	// unknown: the journal never drops a record, so it may still commit.
	ErrNotDurable = errors.New("change not confirmed durable in time")
	// ErrUnavailable: the state could not be loaded or the actor is being
	// rebuilt after a failure; nothing was changed.
	ErrUnavailable = errors.New("temporarily unavailable")
	// ErrClosed: the service is shutting down; nothing was changed.
	ErrClosed = errors.New("shutting down")
	// ErrNotOwner: this node does not hold the lease on the user's shard
	// (it was never its, or it was lost); nothing was changed. The API
	// forwards the request to the owner.
	ErrNotOwner = errors.New("this node does not own the user's shard")
	// ErrKeyReused: an idempotency key was reused for a different request.
	ErrKeyReused = errors.New("idempotency key reused for a different request")
)

// Shed causes: each is one of the generic errors above (errors.Is holds,
// so the API answers its status and body) with the cause named, so the
// API can count why it shed a request (merch_shed_total{reason}).
var (
	// ErrJournalFull: the journal's bounded queue (JOURNAL_QUEUE) is full.
	ErrJournalFull = fmt.Errorf("%w: journal queue full", ErrOverloaded)
	// ErrJournalUnavailable: the journal's database writes are failing.
	ErrJournalUnavailable = fmt.Errorf("%w: journal writes failing", ErrUnavailable)
	// ErrUserBusy: the user has INFLIGHT_PER_USER requests pending.
	ErrUserBusy = fmt.Errorf("%w: too many pending requests for the user", ErrOverloaded)
)
