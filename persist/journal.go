package persist

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
)

// JournalMetrics observes the journal. Implementations must be safe for
// concurrent use.
type JournalMetrics interface {
	// Committed is called once per committed batch.
	Committed(records int, byKind *actors.RecordCounts, flush time.Duration)
	// Failed is called once per failed batch attempt.
	Failed()
	// Fenced is called once per batch the database refused because this
	// node no longer owned what it thought (the fence).
	Fenced()
	// Unconfirmed is called once per batch that committed on the primary
	// but whose wait for the synchronous standby was cancelled (answered
	// ErrNotDurable).
	Unconfirmed()
	// OneCopy is called with a committed batch's records when, as of the
	// last probe (JournalConfig.Sync), the primary had no synchronous
	// standby: they were acknowledged with one copy.
	OneCopy(records int)
}

// NopJournalMetrics discards observations.
type NopJournalMetrics struct{}

func (NopJournalMetrics) Committed(int, *actors.RecordCounts, time.Duration) {}
func (NopJournalMetrics) Failed()                                            {}
func (NopJournalMetrics) Fenced()                                            {}
func (NopJournalMetrics) Unconfirmed()                                       {}
func (NopJournalMetrics) OneCopy(int)                                        {}

// JournalConfig builds a Journal. Every field is required but Sync and
// Ownership.
type JournalConfig struct {
	// Pool must come from Open: its notice handler reports commits whose
	// wait for the synchronous standby was cancelled.
	Pool *pgxpool.Pool
	// Writer names this process's row in journal_writers. Processes that
	// share a name exclude each other: the last to open wins, and the
	// superseded one's next batch is refused and it stops.
	Writer string
	// QueueMax bounds records waiting for the writer; Append fails with
	// actors.ErrOverloaded when it is full, so a slow database turns into
	// fast 503s rather than growing memory.
	QueueMax int
	// BatchMax bounds records per transaction: PostgreSQL arrays and the
	// completion burst stay small enough to keep latency flat.
	BatchMax int
	// RetryMin and RetryMax bound the backoff between attempts of a failed
	// batch (database unreachable).
	RetryMin, RetryMax time.Duration
	// AttemptTimeout bounds one attempt to write a batch.
	AttemptTimeout time.Duration
	Metrics        JournalMetrics
	// Sync, when set, says whether the primary has a synchronous standby;
	// records committed without one are counted (Metrics.OneCopy).
	Sync *SyncWatch
	// Ownership says which shard leases the node holds. nil: a single node
	// that holds every shard for as long as it runs (its ownership version
	// never changes; a refusal as not owner is then fatal).
	Ownership Ownership
	// Fatal is called once when an invariant of our own is broken (this
	// writer was superseded, a balance update touched the wrong rows). The
	// journal has stopped writing for good; the process must exit non-zero
	// and recover its state from PostgreSQL on restart.
	Fatal func(error)

	// afterMarkerCheck, when set (tests only), runs after a retry read the
	// marker and before it sends the batch.
	afterMarkerCheck func(batch int64)
}

// Journal is the group-commit write-ahead journal. Append is safe for
// concurrent use; one writer goroutine owns everything else.
type Journal struct {
	cfg         JournalConfig
	incarnation int64
	version     int64 // ownership version batches are checked against; writer goroutine
	queue       chan entry
	closing     atomic.Bool
	// appending counts Append calls past the closing check, so Close can
	// wait for them before draining: no record is left in the queue.
	appending atomic.Int64
	healthy   atomic.Bool
	// halted is terminal: set when Fatal was called; from then on nothing
	// is written and every record is refused.
	halted    atomic.Bool
	nextBatch int64 // owned by the writer goroutine
	stop      chan struct{}
	done      chan struct{}
	flushCtx  context.Context
	mu        sync.Mutex // guards flushCtx during Close
}

var _ actors.Journal = (*Journal)(nil)

// Ownership is what the journal needs of the lease manager (package
// cluster declares the rest). Safe for concurrent use.
type Ownership interface {
	// Refresh re-reads, from the database, the shards this node holds and
	// the ownership version of its writer row, read together; the journal
	// calls it after a batch was refused as not owner.
	Refresh(ctx context.Context) (version int64, err error)
	// Holds reports whether the node holds shard s under epoch now, as of
	// the latest Refresh (or renewal).
	Holds(s actors.Shard, epoch uint64) bool
}

// claimSQL takes the writer's row for a new incarnation. Its row lock waits
// for a batch of a previous incarnation that is still committing, so once
// it returns every earlier batch has committed or aborted, and later ones
// of the old incarnation are refused by journal_begin.
const claimSQL = `INSERT INTO journal_writers (writer, incarnation, last_batch) VALUES ($1, 1, 0)
ON CONFLICT (writer) DO UPDATE SET incarnation = journal_writers.incarnation + 1, claimed_at = now()
RETURNING incarnation, last_batch, owner_version`

// OpenJournal claims the writer's row and starts the writer. Call it before
// any user state is loaded.
func OpenJournal(ctx context.Context, cfg JournalConfig) (*Journal, error) {
	if cfg.Pool == nil || cfg.Writer == "" || cfg.Metrics == nil || cfg.Fatal == nil || cfg.QueueMax < 1 ||
		cfg.BatchMax < 1 || cfg.RetryMin <= 0 || cfg.RetryMax < cfg.RetryMin || cfg.AttemptTimeout <= 0 {
		return nil, errors.New("persist: incomplete JournalConfig")
	}
	var inc, last, version int64
	if err := cfg.Pool.QueryRow(ctx, claimSQL, cfg.Writer).Scan(&inc, &last, &version); err != nil {
		return nil, fmt.Errorf("persist: claim journal writer %q: %w", cfg.Writer, err)
	}
	j := &Journal{cfg: cfg, incarnation: inc, version: version, queue: make(chan entry, cfg.QueueMax),
		nextBatch: last + 1, stop: make(chan struct{}), done: make(chan struct{})}
	j.healthy.Store(true)
	go j.run()
	return j, nil
}

// Incarnation returns the number this process's claim of the writer row
// got; it grows by one with every start.
func (j *Journal) Incarnation() int64 { return j.incarnation }

// Append implements actors.Journal. It never blocks.
func (j *Journal) Append(rec *actors.Record) error {
	j.appending.Add(1)
	defer j.appending.Add(-1)
	switch {
	case j.closing.Load():
		return actors.ErrClosed
	case !j.healthy.Load():
		// The writer is retrying a failed batch (database unreachable) or
		// has halted: refuse new work at once rather than let it wait for a
		// deadline. A batch being retried detects recovery by itself.
		return actors.ErrJournalUnavailable
	}
	select {
	case j.queue <- entry{rec: *rec}:
		return nil
	default:
		return actors.ErrJournalFull
	}
}

// QueueDepth returns the number of records waiting for the writer.
func (j *Journal) QueueDepth() int { return len(j.queue) }

// QueueCapacity returns the queue's bound (JournalConfig.QueueMax).
func (j *Journal) QueueCapacity() int { return cap(j.queue) }

// Healthy reports whether the last write attempt succeeded.
func (j *Journal) Healthy() bool { return j.healthy.Load() }

// Ready reports whether the journal can write now: it has not halted, its
// last attempt succeeded and the database answers.
func (j *Journal) Ready(ctx context.Context) error {
	switch {
	case j.halted.Load():
		return errors.New("journal: halted")
	case !j.Healthy():
		return errors.New("journal: database writes failing")
	}
	return j.cfg.Pool.Ping(ctx)
}

// Close stops accepting records, writes everything queued and stops the
// writer. If the database stays unreachable past ctx, the records still
// queued are completed with actors.ErrNotDurable (outcome unknown) and
// Close returns ctx's error.
func (j *Journal) Close(ctx context.Context) error {
	if j.closing.Swap(true) {
		<-j.done
		return nil
	}
	for j.appending.Load() > 0 {
		runtime.Gosched() // Appends past the check finish in nanoseconds
	}
	j.mu.Lock()
	j.flushCtx = ctx
	j.mu.Unlock()
	close(j.stop)
	<-j.done
	return ctx.Err()
}

func (j *Journal) shutdownCtx() context.Context {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.flushCtx
}

// run is the writer: block for the first record, take everything else
// queued up to BatchMax, commit, complete, repeat.
func (j *Journal) run() {
	defer close(j.done)
	b := newBatch()
	for {
		select {
		case e := <-j.queue:
			b.entries = append(b.entries, e)
		case <-j.stop:
			j.drain(b)
			return
		}
		j.fill(b)
		j.commit(b)
		b.reset()
	}
}

// fill takes what is queued without waiting.
func (j *Journal) fill(b *batch) {
	for len(b.entries) < j.cfg.BatchMax {
		select {
		case e := <-j.queue:
			b.entries = append(b.entries, e)
		default:
			return
		}
	}
}

// drain writes everything left after Close began.
func (j *Journal) drain(b *batch) {
	for {
		j.fill(b)
		if len(b.entries) == 0 {
			return
		}
		j.commit(b)
		b.reset()
	}
}

// halt makes the journal stop writing for good and reports err once.
func (j *Journal) halt(err error) {
	if j.halted.Swap(true) {
		return
	}
	j.healthy.Store(false)
	j.cfg.Fatal(err)
}

// wait sleeps for the backoff; false when Close's deadline passed.
func (j *Journal) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-j.stop:
		select {
		case <-t.C:
			return true
		case <-j.shutdownCtx().Done():
			return false
		}
	}
}

func countKinds(b *batch) *actors.RecordCounts {
	var n actors.RecordCounts
	for i := range b.entries {
		n[b.entries[i].rec.Kind]++
	}
	return &n
}

// complete tells every record of b its outcome, in append order. The
// credits a committed fold applied go to the batch's first Folded record.
func (j *Journal) complete(b *batch, err error) {
	credits := b.credits
	for i := range b.entries {
		r := &b.entries[i].rec
		if err == nil && r.Kind == actors.Folded && r.Credits != nil {
			*r.Credits = append(*r.Credits, credits...)
			credits = nil
		}
		e := err
		if e == nil && r.Kind == actors.Registered && b.regConflicts[r.User] {
			e = actors.ErrUserExists
		}
		r.Done.JournalDone(e)
	}
}
