// Package persist is the PostgreSQL side: the connection pool, the schema
// migrations runner, user loading (actors.Store) and the group-commit
// write-ahead journal (actors.Journal).
//
// The journal has exactly one writer goroutine. It takes everything queued
// (up to a batch limit), writes it in one implicit transaction sent as one
// pipelined round trip (set-based statements over unnest arrays), and
// completes the records in append order. While batch k commits, batch k+1
// accumulates in the bounded queue; it never waits on a timer when idle, so
// batches grow with load by themselves. A single writer also means
// PostgreSQL sees no concurrent writers: no lock waits, no deadlocks.
//
// One server process writes to a database at a time: each claims the
// writer's row in journal_writers at start (a new incarnation), and every
// batch begins with journal_begin, which refuses a superseded incarnation
// on the server, so the older process's next batch aborts and it stops.
// write.go states the protocol: how a batch is never applied twice, how a
// refused batch is split until only the records the database refuses fail,
// and what halts the journal. Idempotency keys expire after KeyRetention;
// the journal replaces an expired key's row, and PurgeExpiredKeys deletes
// them. Errors that could quote DATABASE_URL pass through Redact.
//
// On a primary with a synchronous standby (pg_auto_failover) a commit is
// acknowledged only once the standby has it: syncrep.go says how (no
// cancel request ever reaches a COMMIT, a cancelled sync wait is an
// unknown outcome, a batch found committed is confirmed by a replicated
// write) and how SyncWatch shows when commits have one copy.
//
// persist never sees HTTP; package api never sees pgx.
package persist
