package actorstest

import (
	"fmt"
	"sync"
	"testing"

	"merch/actors"
)

// batchMax is how many queued records the writer commits as one batch.
const batchMax = 64

// Journal is an actors.Journal the test controls. Started, it works like
// persist's: a bounded queue (Append fails fast with ErrOverloaded when it
// is full) and one writer goroutine that takes everything queued as a
// batch, commits it to the Store and completes the records in append
// order. With hold set, appended records wait until the test completes
// them (CompleteHeld, ReleaseAll), in any order it likes. Safe for
// concurrent use.
type Journal struct {
	store *Store
	sync  bool // complete inside Append (NewSyncJournal)
	queue chan *actors.Record
	stop  chan struct{}
	done  chan struct{}

	mu        sync.Mutex
	started   bool
	closed    bool
	hold      bool
	held      []*actors.Record
	appends   int
	completed int
	refuse    func(rec *actors.Record) error
	fail      func(rec *actors.Record) error
	changes   Notifier // notified after every append and completion
}

var _ actors.Journal = (*Journal)(nil)

// NewJournal returns a journal over store with a queue of queueMax records.
// Its writer is not started (Start): until then only held records
// complete, when the test says so.
func NewJournal(store *Store, queueMax int) *Journal {
	return &Journal{store: store, queue: make(chan *actors.Record, queueMax),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// MustJournal returns a started journal with a queue of queueMax records;
// it is closed at cleanup.
func MustJournal(tb testing.TB, store *Store, queueMax int) *Journal {
	tb.Helper()
	j := NewJournal(store, queueMax)
	j.Start()
	tb.Cleanup(j.Close)
	return j
}

// MustHeldJournal returns a started journal (queue of 1) that holds every
// record until the test completes it; SetHold(false) lets the writer take
// the next ones.
func MustHeldJournal(tb testing.TB, store *Store) *Journal {
	tb.Helper()
	j := MustJournal(tb, store, 1)
	j.SetHold(true)
	return j
}

// NewSyncJournal returns a journal that commits every record to store and
// completes it inside Append, on the appending goroutine (for allocation
// budgets and benchmarks: it isolates the callers' own cost). An actor may
// append to it from Receive: JournalDone only enqueues the outcome in the
// same actor's mailbox, which the actor reads after the current message.
// Nothing on that path allocates. Hold, refuse and fail work as usual.
func NewSyncJournal(store *Store) *Journal {
	j := NewJournal(store, 0)
	j.sync = true
	return j
}

// Start starts the writer; Close stops it.
func (j *Journal) Start() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.started || j.sync {
		panic("actorstest: Journal started twice, or a sync journal started")
	}
	j.started = true
	go j.writer()
}

// Append implements actors.Journal. The refuse hook runs first, outside
// the lock: a non-nil result is returned (the record is dropped), and it
// may block or panic.
func (j *Journal) Append(rec *actors.Record) error {
	j.mu.Lock()
	refuse := j.refuse
	j.mu.Unlock()
	if refuse != nil {
		if err := refuse(rec); err != nil {
			return err
		}
	}
	j.mu.Lock()
	switch {
	case j.closed:
		j.mu.Unlock()
		return actors.ErrClosed
	case j.hold:
		j.held = append(j.held, clone(rec))
	case j.sync:
		j.appends++
		j.mu.Unlock()
		j.finish(rec, j.commit(rec, nil))
		return nil
	default:
		// Queued under the lock, so Close cannot miss it.
		if !j.enqueue(rec) {
			j.mu.Unlock()
			return actors.ErrOverloaded
		}
	}
	j.appends++
	j.mu.Unlock()
	j.changes.Notify()
	return nil
}

// clone copies rec: a journal keeps its own copy (Journal's contract).
func clone(rec *actors.Record) *actors.Record {
	cp := *rec
	return &cp
}

func (j *Journal) enqueue(rec *actors.Record) bool {
	select {
	case j.queue <- clone(rec):
		return true
	default:
		return false
	}
}

func (j *Journal) writer() {
	defer close(j.done)
	batch := make([]*actors.Record, 0, batchMax)
	errs := make([]error, 0, batchMax)
	for {
		select {
		case <-j.stop:
			j.drain()
			return
		case rec := <-j.queue:
			batch = append(batch[:0], rec)
		fill:
			for len(batch) < batchMax {
				select {
				case rec := <-j.queue:
					batch = append(batch, rec)
				default:
					break fill
				}
			}
			errs = errs[:0]
			for _, rec := range batch {
				errs = append(errs, j.commit(rec, nil))
			}
			for i, rec := range batch {
				j.finish(rec, errs[i])
			}
		}
	}
}

// drain completes every queued record with ErrClosed.
func (j *Journal) drain() {
	for {
		select {
		case rec := <-j.queue:
			j.finish(rec, actors.ErrClosed)
		default:
			return
		}
	}
}

// commit decides a record's outcome: err (or the fail hook's) means it was
// not written; otherwise the store applies it.
func (j *Journal) commit(rec *actors.Record, err error) error {
	if err == nil {
		j.mu.Lock()
		fail := j.fail
		j.mu.Unlock()
		if fail != nil {
			err = fail(rec)
		}
	}
	if err != nil {
		return err
	}
	return j.store.Apply(rec)
}

func (j *Journal) finish(rec *actors.Record, err error) {
	rec.Done.JournalDone(err)
	j.mu.Lock()
	j.completed++
	j.mu.Unlock()
	j.changes.Notify()
}

// Close makes Append answer ErrClosed, stops the writer, and completes
// the records still queued or held with ErrClosed, so every appended
// record is completed exactly once. Calling
// it again does nothing.
func (j *Journal) Close() {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return
	}
	j.closed = true
	started, held := j.started, j.held
	j.held = nil
	j.mu.Unlock()
	if started {
		close(j.stop)
		<-j.done
	} else {
		j.drain()
	}
	for _, rec := range held {
		j.finish(rec, actors.ErrClosed)
	}
}

// SetHold makes Append keep the next records for the test (true) or pass
// them on again (false); records already held stay held.
func (j *Journal) SetHold(hold bool) {
	j.mu.Lock()
	j.hold = hold
	j.mu.Unlock()
}

// SetRefuse installs Append's refuse hook; nil removes it.
func (j *Journal) SetRefuse(fn func(rec *actors.Record) error) {
	j.mu.Lock()
	j.refuse = fn
	j.mu.Unlock()
}

// SetFail installs the commit hook: a non-nil result completes the record
// with it, unwritten; nil from the hook (or no hook) commits it.
func (j *Journal) SetFail(fn func(rec *actors.Record) error) {
	j.mu.Lock()
	j.fail = fn
	j.mu.Unlock()
}

// HeldCount returns how many records wait for the test.
func (j *Journal) HeldCount() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.held)
}

// Counts returns how many records were appended and how many completed.
func (j *Journal) Counts() (appends, completed int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.appends, j.completed
}

// Changed returns a channel closed at the next append or completion (for
// MustWait).
func (j *Journal) Changed() <-chan struct{} { return j.changes.Changed() }

// MustWaitHeld waits until at least n records are held.
func (j *Journal) MustWaitHeld(tb testing.TB, n int) {
	tb.Helper()
	MustWait(tb, j, fmt.Sprintf("%d held records", n), func() bool { return j.HeldCount() >= n })
}

// Take removes and returns the held record at index i (in append order);
// the test then owns its completion.
func (j *Journal) Take(i int) *actors.Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	rec := j.held[i]
	j.held = append(j.held[:i], j.held[i+1:]...)
	return rec
}

// CompleteHeld completes the held record at index i on the caller's
// goroutine (standing in for the writer): err == nil commits it to the
// store first (the fail hook still applies).
func (j *Journal) CompleteHeld(i int, err error) *actors.Record {
	rec := j.Take(i)
	j.finish(rec, j.commit(rec, err))
	return rec
}

// ReleaseAll completes every held record in append order with err.
func (j *Journal) ReleaseAll(err error) {
	for j.HeldCount() > 0 {
		j.CompleteHeld(0, err)
	}
}
