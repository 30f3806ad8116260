package actors

import (
	"sync"
	"time"
)

// op is what a client asked a user's actor to do.
type op uint8

const (
	opInfo op = iota + 1
	opBuy
	opSend
	opFold // credits a fold applied, for a live actor (remote.go)
)

// phase is where a request is in its protocol (see transfer.go).
type phase uint8

const (
	phaseNew       phase = iota // at the owner, not yet validated
	phaseCommitted              // back at the owner with the journal's outcome
	phaseCredit                 // at the transfer recipient, record committed
)

// Pins a request holds on user handles (see directory.go). Each pin keeps
// the actor resident until released.
const (
	heldOwner uint8 = 1 << iota
	heldPeer
)

// request is one client command travelling through the actors. It is pooled;
// it carries its own reply channel (capacity 1) so no hollywood Request is
// needed. Ownership: the facade fills it and sends it; from then on only the
// actor currently holding it touches it, until the reply is sent. A request
// whose caller timed out is abandoned, never returned to the pool, because an
// actor may still write to it.
type request struct {
	op     op
	phase  phase
	held   uint8
	item   ItemID
	amount Coins
	owner  *handle // the buyer or sender
	peer   *handle // the transfer recipient (local transfers; folds: the receiver)
	// peerName is the recipient's name; remote: another node owns it (no
	// handle here; see remote.go).
	peerName string
	remote   bool
	credits  []Credit // opFold
	folds    int64    // opFold: the receiver's fold counter after them
	key      string   // idempotency key
	// keyChecked: the facade found key absent from the store, so a key
	// missing from the actor's table is new (see keyTable.evicted).
	keyChecked bool
	enqueued   int64 // monotime at the last send, for the mailbox wait metric
	// rid is the client's request id (X-Request-Id), copied so a pooled
	// request carries it without allocating; only log lines read it.
	rid    [RequestIDMax]byte
	ridLen uint8
	err    error // journal outcome, set by JournalDone
	reply  chan reply
}

type reply struct {
	err  error
	info []byte // immutable; shared with the actor's cache
}

var requestPool = sync.Pool{New: func() any { return &request{reply: make(chan reply, 1)} }}

func getRequest() *request { return requestPool.Get().(*request) }

// RequestIDMax bounds the request ids the actors keep for their log lines
// (longer ones are cut).
const RequestIDMax = 128

// setRequestID copies id into r.
func (r *request) setRequestID(id []byte) {
	r.ridLen = uint8(copy(r.rid[:], id))
}

// RequestID implements RequestIDer.
func (r *request) RequestID() string { return string(r.rid[:r.ridLen]) }

// putRequest returns a request whose reply has been received.
func putRequest(r *request) {
	ch := r.reply
	*r = request{reply: ch}
	requestPool.Put(r)
}

// kind classifies the request for metrics.
func (r *request) kind() MessageKind {
	switch {
	case r.phase == phaseCommitted:
		return KindCommitted
	case r.phase == phaseCredit:
		return KindCredit
	case r.op == opBuy:
		return KindBuy
	case r.op == opSend:
		return KindSend
	}
	return KindInfo
}

// JournalDone implements Completion: the outcome goes back, as a message, to
// the actor that appended the record. Its pin keeps that actor resident.
func (r *request) JournalDone(err error) {
	r.err = err
	r.phase = phaseCommitted
	r.owner.enqueue(r)
}

func (r *request) releaseOwner() {
	if r.held&heldOwner != 0 {
		r.held &^= heldOwner
		r.owner.unpinOwn()
	}
}

func (r *request) releasePeer() {
	if r.held&heldPeer != 0 {
		r.held &^= heldPeer
		r.peer.unpin()
	}
}

// respond releases every pin r still holds and answers its caller. r must not
// be touched afterwards: the caller may already be reusing it.
func (r *request) respond(err error, info []byte) {
	r.releasePeer()
	r.releaseOwner()
	select {
	case r.reply <- reply{err: err, info: info}:
	default:
		panic("actors: request answered twice")
	}
}

var timerPool sync.Pool

func getTimer(d time.Duration) *time.Timer {
	if t, ok := timerPool.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// putTimer stops t; since Go 1.23 a stopped timer's channel holds no stale
// value, so it can be reused safely.
func putTimer(t *time.Timer) {
	t.Stop()
	timerPool.Put(t)
}
