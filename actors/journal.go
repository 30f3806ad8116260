package actors

import "context"

// RecordKind says which fact a journal record states.
type RecordKind uint8

// Journal records are facts in the past tense.
const (
	Registered  RecordKind = iota + 1 // User was created with StartingCoins and PasswordHash.
	Purchased                         // User bought Item for Amount.
	Transferred                       // User sent Amount to Peer (both in shards of this node).
	// TransferredOut: User sent Amount to Peer, whose shard another node
	// owns: User is debited and a pending credit for Peer is written in the
	// same transaction; Peer's owner folds it (Folded).
	TransferredOut
	// Folded: the pending credits of Shard were applied to their
	// receivers (exactly once: deleted as they are applied); the journal
	// reports what it applied through Credits.
	Folded
)

// RecordKinds lists every kind.
var RecordKinds = [...]RecordKind{Registered, Purchased, Transferred, TransferredOut, Folded}

// RecordCounts counts records by kind, indexed by RecordKind (index 0 is
// unused).
type RecordCounts [Folded + 1]int

// String returns the kind's name, for logs and metric labels.
func (k RecordKind) String() string {
	switch k {
	case Registered:
		return "registered"
	case Purchased:
		return "purchased"
	case Transferred:
		return "transferred"
	case TransferredOut:
		return "transferred_out"
	case Folded:
		return "folded"
	}
	return "unknown"
}

// Credit is one pending credit a fold applied: Amount from From to To,
// after which To's fold counter is Folds.
type Credit struct {
	From, To string
	Amount   Coins
	Folds    int64
}

// Record is one change to make durable. Journal implementations copy it.
//
// The three one-byte fields come first, together: Record is allocated for
// every write, and packed it fits the 128-byte size class.
type Record struct {
	Kind         RecordKind
	Item         ItemID
	Shard        Shard  // Folded: the shard whose pending credits to fold
	User         string // registrant, buyer or sender
	Peer         string // transfer recipient
	Amount       Coins  // price paid or coins sent
	PasswordHash []byte // Registered only; never mutated after Append
	Key          string // idempotency key, stored with the change; "" for none
	// Epoch is the epoch of the lease on User's shard under which the
	// record was made (PeerEpoch: Peer's, for a transfer between two
	// shards of this node). The journal writes only records of leases the
	// node still holds; ledger rows carry Epoch.
	Epoch, PeerEpoch uint64
	Credits          *[]Credit // Folded: the journal appends what it applied before Done
	Done             Completion
}

// Completion is told the outcome of one appended record.
type Completion interface {
	// JournalDone is called exactly once per appended record, from the
	// journal's writer goroutine, in append order. It must not block. The
	// error says what happened, and only ErrNotDurable leaves it open:
	//   - nil: committed.
	//   - ErrUserExists: a Registered record lost to an existing user.
	//   - ErrNotDurable: outcome unknown (the journal gave up waiting, e.g.
	//     at its shutdown deadline, and the record may have committed). The
	//     appender must treat it as possibly applied: never free what it
	//     reserved; rebuild from the Store.
	//   - any other error (ErrUnavailable, ErrInternal, …): definitely not
	//     written; the appender may undo what it reserved.
	JournalDone(err error)
}

// RequestIDer is optionally implemented by a Completion: the id of the
// client request the record belongs to, for the log lines it may cause.
type RequestIDer interface {
	RequestID() string
}

// RequestID returns the request id of r's completion, or "".
func (r *Record) RequestID() string {
	if t, ok := r.Done.(RequestIDer); ok {
		return t.RequestID()
	}
	return ""
}

// Journal makes records durable. Implementations batch records from many
// actors into one database transaction (group commit).
type Journal interface {
	// Append queues a copy of rec and returns at once. It returns
	// ErrOverloaded when its bounded queue is full, ErrUnavailable while
	// the database is unreachable and ErrClosed after shutdown began; then
	// rec.Done is never called.
	Append(rec *Record) error
}

// Store loads durable user state.
type Store interface {
	// LoadUser returns a user's durable state, or ErrUnknownUser.
	LoadUser(ctx context.Context, name string) (UserState, error)
	// KeyApplied reports whether a change with the user's idempotency key
	// is stored (within the retention period), and which change it was.
	KeyApplied(ctx context.Context, user, key string) (KeyedRequest, bool, error)
}
