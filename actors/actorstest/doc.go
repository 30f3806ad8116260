// Package actorstest is test support for every package that runs the real
// actors.System: one honest in-memory Store and Journal, the /api/info
// decode type, and the wait helpers the fakes are synchronised with.
//
// The Store applies records with PostgreSQL's rules, so a test cannot pass
// on a change the database would refuse: the balance CHECK (≥ 0), unknown
// users (a missing row), a Registered record for a taken name
// (ErrUserExists, as persist reports the conflict), and the idempotency
// key's primary key (a second change under a live key). A refused record
// is recorded as a violation; MustStore fails the test with each one at
// cleanup. LoadUser returns at most actors.KeysPerUserMax of the most recent
// keys, like persist; KeyApplied sees them all. Records of the cluster
// (TransferredOut, Folded) are not modelled and count as violations.
//
// The Journal is persist's contract without the database: a bounded queue
// (ErrOverloaded when full), one writer that commits batches to the Store
// and completes records in append order, and ErrClosed once Close began.
// Tests steer it: records can be held until the test completes them (in
// any order), refused at Append or failed at commit. NewSyncJournal
// completes inside Append instead, for allocation budgets and benchmarks,
// and allocates nothing on that path.
//
// Concurrency: Store, Journal and Notifier are safe for concurrent use. A
// Journal's hooks (SetRefuse, SetFail) run outside its lock, on the
// appending goroutine or the writer's.
//
// Package actors' own tests cannot import this package (it imports
// actors); actors/fakes_test.go states how they reach it.
package actorstest
