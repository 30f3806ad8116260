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
// Exactly one server process may write to a database: the batch marker in
// journal_state would reject a second writer's batches (and the process
// stops rather than guess).
//
// persist never sees HTTP; package api never sees pgx.
package persist
