package persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"merch/actors"
)

// JournalMetrics observes the journal. Implementations must be safe for
// concurrent use.
type JournalMetrics interface {
	// Committed is called once per committed batch.
	Committed(records int, byKind *[4]int, flush time.Duration)
	// Failed is called once per failed batch attempt.
	Failed()
}

// NopJournalMetrics discards observations.
type NopJournalMetrics struct{}

func (NopJournalMetrics) Committed(int, *[4]int, time.Duration) {}
func (NopJournalMetrics) Failed()                               {}

// JournalConfig builds a Journal. Every field is required.
type JournalConfig struct {
	Pool *pgxpool.Pool
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
	// Fatal is called when the database refuses a batch for a reason that
	// retrying cannot fix (a broken invariant, a second writer). The
	// process must stop; state is recovered from PostgreSQL on restart.
	Fatal func(error)
}

// Journal is the group-commit write-ahead journal. Append is safe for
// concurrent use; one writer goroutine owns everything else.
type Journal struct {
	cfg     JournalConfig
	queue   chan entry
	closing atomic.Bool
	// appending counts Append calls past the closing check, so Close can
	// wait for them before draining: no record is left in the queue.
	appending atomic.Int64
	healthy   atomic.Bool
	nextBatch int64
	stop      chan struct{}
	done      chan struct{}
	flushCtx  context.Context
	mu        sync.Mutex // guards flushCtx during Close
}

var _ actors.Journal = (*Journal)(nil)

// OpenJournal reads the batch marker and starts the writer.
func OpenJournal(ctx context.Context, cfg JournalConfig) (*Journal, error) {
	if cfg.Pool == nil || cfg.Metrics == nil || cfg.Fatal == nil || cfg.QueueMax < 1 ||
		cfg.BatchMax < 1 || cfg.RetryMin <= 0 || cfg.RetryMax < cfg.RetryMin || cfg.AttemptTimeout <= 0 {
		return nil, errors.New("persist: incomplete JournalConfig")
	}
	var last int64
	if err := cfg.Pool.QueryRow(ctx, `SELECT last_batch FROM journal_state WHERE id = 1`).Scan(&last); err != nil {
		return nil, fmt.Errorf("persist: read journal marker: %w", err)
	}
	j := &Journal{cfg: cfg, queue: make(chan entry, cfg.QueueMax), nextBatch: last + 1,
		stop: make(chan struct{}), done: make(chan struct{})}
	j.healthy.Store(true)
	go j.run()
	return j, nil
}

// Append implements actors.Journal. It never blocks.
func (j *Journal) Append(rec *actors.Record) error {
	j.appending.Add(1)
	defer j.appending.Add(-1)
	if j.closing.Load() {
		return actors.ErrClosed
	}
	if !j.healthy.Load() {
		// The writer is retrying a failed batch (database unreachable):
		// refuse new work at once rather than let it wait for a deadline.
		// The batch being retried detects recovery by itself.
		return actors.ErrUnavailable
	}
	select {
	case j.queue <- entry{rec: *rec}:
		return nil
	default:
		return actors.ErrOverloaded
	}
}

// QueueDepth returns the number of records waiting for the writer.
func (j *Journal) QueueDepth() int { return len(j.queue) }

// Healthy reports whether the last write attempt succeeded.
func (j *Journal) Healthy() bool { return j.healthy.Load() }

// Ready reports whether the journal can write now: its last attempt
// succeeded and the database answers.
func (j *Journal) Ready(ctx context.Context) error {
	if !j.Healthy() {
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

// commit writes b, retrying transient failures with backoff until it
// succeeds (or, during shutdown, until Close's context ends), then completes
// every record in order.
func (j *Journal) commit(b *batch) {
	b.id = j.nextBatch
	b.aggregate()
	backoff := j.cfg.RetryMin
	failing := false
	for attempt := 0; ; attempt++ {
		start := time.Now()
		err := j.attempt(b, attempt > 0)
		if err == nil {
			j.nextBatch++
			j.cfg.Metrics.Committed(len(b.entries), countKinds(b), time.Since(start))
			if failing || !j.healthy.Load() {
				slog.Info("journal recovered", "batch", b.id, "attempts", attempt+1)
			}
			j.healthy.Store(true)
			j.complete(b, nil)
			return
		}
		j.cfg.Metrics.Failed()
		if permanent(err) {
			j.cfg.Fatal(fmt.Errorf("persist: batch %d refused: %w", b.id, err))
			j.complete(b, actors.ErrNotDurable)
			return
		}
		if !failing {
			slog.Error("journal write failed; retrying", "batch", b.id, "records", len(b.entries), "err", err)
			failing = true
		}
		j.healthy.Store(false)
		if !j.wait(backoff) {
			j.complete(b, actors.ErrNotDurable)
			return
		}
		backoff = min(backoff*2, j.cfg.RetryMax)
	}
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

func countKinds(b *batch) *[4]int {
	var n [4]int
	for i := range b.entries {
		n[b.entries[i].rec.Kind]++
	}
	return &n
}

// complete tells every record its outcome, in append order.
func (j *Journal) complete(b *batch, err error) {
	for i := range b.entries {
		r := &b.entries[i].rec
		e := err
		if e == nil && r.Kind == actors.Registered && b.regConflicts[r.User] {
			e = actors.ErrUserExists
		}
		r.Done.JournalDone(e)
	}
}

// attempt writes the batch as one implicit transaction: all statements are
// pipelined in one round trip and PostgreSQL commits them together at the
// closing Sync. A retry first checks the marker, because a lost connection
// can hide a commit that happened.
func (j *Journal) attempt(b *batch, retry bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), j.cfg.AttemptTimeout)
	defer cancel()
	if retry {
		var last int64
		err := j.cfg.Pool.QueryRow(ctx, `SELECT last_batch FROM journal_state WHERE id = 1`).Scan(&last)
		if err != nil {
			return err
		}
		if last >= b.id {
			return errAlreadyCommitted(b, last)
		}
	}
	clear(b.regConflicts)
	var pb pgx.Batch
	kinds := b.queue(&pb, make([]stmt, 0, 8))
	br := j.cfg.Pool.SendBatch(ctx, &pb)
	err := j.readResults(br, b, kinds)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// errAlreadyCommitted handles a retry that finds its batch committed by an
// attempt whose answer was lost. Which registrations of that attempt lost
// to an existing user is unknown, so all of them are reported as existing:
// the caller then verifies the password against the stored user, which is
// right either way.
func errAlreadyCommitted(b *batch, last int64) error {
	if last == b.id {
		for _, n := range b.regNames {
			b.regConflicts[n] = true
		}
		return nil
	}
	return fmt.Errorf("%w: marker %d is past batch %d", errSecondWriter, last, b.id)
}

var errSecondWriter = errors.New("another writer is using this database")

func (j *Journal) readResults(br pgx.BatchResults, b *batch, kinds []stmt) error {
	for _, k := range kinds {
		switch k {
		case stmtRegister:
			rows, err := br.Query()
			if err != nil {
				return err
			}
			for _, n := range b.regNames {
				b.regConflicts[n] = true
			}
			for rows.Next() {
				var name string
				if err := rows.Scan(&name); err != nil {
					rows.Close()
					return err
				}
				delete(b.regConflicts, name)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		default:
			tag, err := br.Exec()
			if err != nil {
				return err
			}
			if k == stmtMark && tag.RowsAffected() != 1 {
				return errSecondWriter
			}
			if k == stmtBalance && tag.RowsAffected() != int64(len(b.names)) {
				return fmt.Errorf("%w: balance update touched %d of %d users",
					errInvariant, tag.RowsAffected(), len(b.names))
			}
		}
	}
	return nil
}

var errInvariant = errors.New("invariant")

// permanent reports whether retrying err cannot help: a constraint or data
// error means a bug or a second writer; the process must stop.
func permanent(err error) bool {
	if errors.Is(err, errSecondWriter) || errors.Is(err, errInvariant) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "22", "23", "42", "2B", "2F", "44":
			return true
		}
	}
	return false
}
