package persist

// Writing a batch, and what the journal does when that fails.
//
//  1. A batch is one implicit transaction whose first statement is
//     journal_begin(writer, incarnation, id): it locks the writer's row and
//     raises an error, so the server aborts the whole transaction, when the
//     incarnation was superseded (MS001), when id is already committed
//     (MS002) or when the marker is past id (MS004). Attempts of one id
//     therefore serialise on that row lock and at most one ever commits,
//     however late a timed-out attempt's bytes reach the server.
//  2. A transient failure (connection lost, timeout, server restarting) is
//     retried with backoff, with the same id and the same records. A retry
//     first reads the marker: a batch found committed by an attempt whose
//     answer was lost completes as committed, once one write of the
//     journal's own has been replicated (confirm, syncrep.go): the batch
//     may be committed on a primary that no standby has heard from.
//     A commit whose wait for the synchronous standby was cancelled
//     (success with a WARNING) completes as unknown (ErrNotDurable).
//  3. A refusal (the database answered with a data or constraint error) is
//     definite for that attempt, but an earlier attempt might still be on
//     its way. So the id is burnt first (journal_burn moves the marker to
//     it, or reports that an attempt of it committed after all), and only
//     then are the records written again under new ids: the batch is split
//     in halves, recursively, until the records the database refuses are
//     alone. Those fail with actors.ErrInternal (500), logged once each;
//     the rest commit, in order.
//  4. A broken invariant of our own (superseded writer, marker ahead of us,
//     a balance update that touched the wrong rows: MS003) halts the
//     journal for good and calls Fatal. Nothing of that batch was written.
//  5. In a cluster, a batch whose ownership version is stale (MS005: a
//     shard was taken from this node, or it took one) was not written
//     either; fence.go re-reads what the node holds and writes the records
//     of leases it still holds again (persist/lease.go has the protocol).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"merch/actors"
)

// SQLSTATEs raised by the migrations' journal functions.
const (
	codeSuperseded  = "MS001"
	codeCommitted   = "MS002"
	codeInvariant   = "MS003"
	codeMarkerAhead = "MS004"
	codeNotOwner    = "MS005"
)

var (
	errSuperseded  = errors.New("another process claimed this journal writer")
	errCommitted   = errors.New("batch already committed")
	errMarkerAhead = errors.New("journal marker is past this batch")
)

// outcome is what the database made of one batch.
type outcome uint8

const (
	committed   outcome = iota
	refused             // definitely not written, id retired: split or fail
	abandoned           // shutdown deadline passed while retrying: unknown
	halted              // a broken invariant: the journal stopped
	fenced              // ownership changed: nothing written; see notOwner
	unconfirmed         // committed locally, replication unknown: ErrNotDurable
)

// commit writes b and completes every record in it.
func (j *Journal) commit(b *batch) {
	if j.halted.Load() {
		j.complete(b, actors.ErrJournalUnavailable)
		return
	}
	if j.cfg.Ownership != nil && !j.dropStale(b) {
		return
	}
	b.aggregate()
	j.commitOrSplit(b)
}

// commitOrSplit writes an aggregated batch and completes its records; on a
// refusal it bisects (step 3 of the header).
func (j *Journal) commitOrSplit(b *batch) {
	out, err := j.write(b)
	switch out {
	case committed:
		j.complete(b, nil)
	case abandoned, unconfirmed:
		j.complete(b, actors.ErrNotDurable)
	case halted:
		j.complete(b, actors.ErrJournalUnavailable)
	case fenced:
		j.notOwner(b)
	case refused:
		if len(b.entries) == 1 {
			logRefused(&b.entries[0].rec, err)
			j.complete(b, actors.ErrInternal)
			return
		}
		mid := len(b.entries) / 2
		for _, part := range [][]entry{b.entries[:mid], b.entries[mid:]} {
			sub := newBatch()
			sub.entries = part
			sub.aggregate()
			j.commitOrSplit(sub)
		}
	}
}

// write makes b durable under the next batch id, retrying transient
// failures with backoff until it commits, is refused, or the journal halts
// or shuts down.
func (j *Journal) write(b *batch) (outcome, error) {
	b.id = j.nextBatch
	backoff := j.cfg.RetryMin
	failing := false
	for attempt := 0; ; attempt++ {
		start := time.Now()
		err := j.attempt(b, attempt > 0)
		switch classify(err) {
		case classOK:
			j.nextBatch++
			j.committedMetrics(b, time.Since(start))
			if failing {
				slog.Info("journal recovered", "batch", b.id, "attempts", attempt+1)
			}
			j.healthy.Store(true)
			return committed, nil
		case classUnconfirmed:
			j.nextBatch++
			j.cfg.Metrics.Unconfirmed()
			j.healthy.Store(true)
			slog.Warn("journal batch committed on the primary but its wait for the synchronous standby was cancelled; answered 503 (outcome unknown)",
				"batch", b.id, "records", len(b.entries))
			return unconfirmed, err
		case classCommitted:
			if err = j.confirm(); err == nil {
				j.nextBatch++
				b.assumeRegistered()
				j.committedMetrics(b, time.Since(start))
				j.healthy.Store(true)
				slog.Info("journal batch found committed by an earlier attempt", "batch", b.id, "attempts", attempt+1)
				return committed, nil
			}
			if classify(err) == classFatal {
				j.cfg.Metrics.Failed()
				j.halt(fmt.Errorf("persist: confirm batch %d: %w", b.id, err))
				return halted, err
			}
			// Not confirmed (no standby answers, or the primary is
			// failing over): retry; the next attempt finds it again.
		case classRefused:
			j.cfg.Metrics.Failed()
			return j.retire(b, err)
		case classFatal:
			j.cfg.Metrics.Failed()
			j.halt(fmt.Errorf("persist: batch %d: %w", b.id, err))
			return halted, err
		case classNotOwner:
			j.cfg.Metrics.Fenced()
			return j.refreshOwnership(b, err)
		}
		j.cfg.Metrics.Failed()
		if !failing {
			slog.Error("journal write failed; retrying", "batch", b.id, "records", len(b.entries), "err", err)
			failing = true
			if !isServerError(err) {
				// The network failed or the server stopped answering: the
				// pool's idle connections may be just as dead (a partition
				// holds their bytes). Retries get fresh ones; connections in
				// use close when released.
				j.cfg.Pool.Reset()
			}
		}
		j.healthy.Store(false)
		if !j.wait(backoff) {
			return abandoned, err
		}
		backoff = min(backoff*2, j.cfg.RetryMax)
	}
}

// retire burns b's id after the database refused it (cause), so no stale
// attempt of it can commit later. If one already did, b is committed.
func (j *Journal) retire(b *batch, cause error) (outcome, error) {
	backoff := j.cfg.RetryMin
	for {
		ctx, cancel := context.WithTimeout(context.Background(), j.cfg.AttemptTimeout)
		var found bool
		err := j.cfg.Pool.QueryRow(ctx, `SELECT journal_burn($1, $2, $3)`,
			j.cfg.Writer, j.incarnation, b.id).Scan(&found)
		cancel()
		if err == nil && found {
			err = j.confirm()
		}
		switch classify(err) {
		case classOK:
			j.nextBatch++
			if found {
				b.assumeRegistered()
				slog.Info("journal batch found committed by an earlier attempt", "batch", b.id)
				return committed, nil
			}
			return refused, cause
		case classFatal:
			j.halt(fmt.Errorf("persist: retire batch %d: %w", b.id, err))
			return halted, err
		}
		j.healthy.Store(false)
		if !j.wait(backoff) {
			return abandoned, err
		}
		backoff = min(backoff*2, j.cfg.RetryMax)
	}
}

const markerSQL = `SELECT incarnation, last_batch FROM journal_writers WHERE writer = $1`

// attempt sends the batch as one implicit transaction: all statements are
// pipelined in one round trip and PostgreSQL commits them together at the
// closing Sync. A retry first reads the marker, because a lost connection
// can hide a commit that happened (journal_begin would refuse it anyway;
// this spares sending the batch).
func (j *Journal) attempt(b *batch, retry bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), j.cfg.AttemptTimeout)
	defer cancel()
	conn, err := j.cfg.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if retry {
		var inc, last int64
		if err := conn.QueryRow(ctx, markerSQL, j.cfg.Writer).Scan(&inc, &last); err != nil {
			return err
		}
		switch {
		case inc != j.incarnation:
			return fmt.Errorf("%w (incarnation %d, now %d)", errSuperseded, j.incarnation, inc)
		case last == b.id:
			return errCommitted
		case last > b.id:
			return fmt.Errorf("%w: marker %d, batch %d", errMarkerAhead, last, b.id)
		}
		if hook := j.cfg.afterMarkerCheck; hook != nil {
			hook(b.id)
		}
	}
	clear(b.regConflicts)
	var pb pgx.Batch
	kinds := b.queue(&pb, j.cfg.Writer, j.incarnation, j.version, make([]stmt, 0, 10))
	cancelledSyncWait(conn) // whatever it reported before is not this batch's
	br := conn.SendBatch(ctx, &pb)
	err = j.readResults(br, b, kinds)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && cancelledSyncWait(conn) {
		return errSyncCancelled
	}
	return err
}

// committedMetrics observes a committed batch, and its records as
// acknowledged with one copy when the primary had no synchronous standby.
func (j *Journal) committedMetrics(b *batch, flush time.Duration) {
	j.cfg.Metrics.Committed(len(b.entries), countKinds(b), flush)
	if j.cfg.Sync != nil && j.cfg.Sync.OneCopy() {
		j.cfg.Metrics.OneCopy(len(b.entries))
	}
}

func (j *Journal) readResults(br pgx.BatchResults, b *batch, kinds []stmt) error {
	b.credits = b.credits[:0]
	for _, k := range kinds {
		if k == stmtFold {
			if err := b.readFold(br); err != nil {
				return err
			}
			continue
		}
		if k != stmtRegister {
			if _, err := br.Exec(); err != nil {
				return err
			}
			continue
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		b.assumeRegistered()
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
	}
	return nil
}

// readFold collects what the fold statement applied.
func (b *batch) readFold(br pgx.BatchResults) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var c actors.Credit
		var amount int64
		if err := rows.Scan(&c.From, &c.To, &amount, &c.Folds); err != nil {
			return err
		}
		c.Amount = actors.Coins(amount)
		b.credits = append(b.credits, c)
	}
	return rows.Err()
}

const (
	classOK          errorClass = iota
	classTransient              // retry the same batch
	classCommitted              // an earlier attempt committed it
	classRefused                // the database refused this content
	classFatal                  // a broken invariant of our own
	classNotOwner               // the fence: this node's ownership changed
	classUnconfirmed            // committed locally; its sync wait was cancelled
)
