package actors

import (
	"context"
	"testing"
)

// The shared fakes are package actorstest's, which imports actors, so
// these internal tests cannot import it. The cycle is broken like an
// export_test.go, the other way round: this file declares, as exported
// interfaces and one struct of constructors (Fakes), exactly what the
// internal tests use of actorstest, and bridge_test.go, an external test
// file of this directory (package actors_test, in the same test binary),
// fills Fakes in its init from actorstest. go test builds actorstest
// against this package's test variant, so the types are the same ones, and
// package actors_test's init runs before any test. Nothing is copied: a
// control is one method in actorstest and its line here.

// Changes is anything that announces its changes (Store, Journal,
// Notifier). It is an alias of the literal MustWait takes, so
// actorstest.MustWait is assignable to Fakes.MustWait as it is.
type Changes = interface{ Changed() <-chan struct{} }

// Notifier is actorstest.Notifier: a broadcast condition.
type Notifier interface {
	Changes
	Notify()
}

// TestStore is actorstest.Store: an honest in-memory Store (see its doc).
type TestStore interface {
	Store
	Changes // at every LoadUser entry and Apply
	Put(name string, st UserState)
	Delete(name string)
	State(name string) (UserState, bool)
	Apply(rec *Record) error
	LoadCount(name string) int
	KeyChecks() int
	SetLoadErr(name string, err error)
	SetKeyErr(err error)
	SetGate(gate <-chan struct{})
	Violations() []string
	UserExists(ctx context.Context, name string) (bool, error)
	Pending() Coins
}

// TestJournal is actorstest.Journal: persist's contract over a TestStore,
// with records held, refused or failed on demand.
type TestJournal interface {
	Journal
	Changes // at every append and completion
	SetHold(hold bool)
	SetRefuse(fn func(rec *Record) error)
	SetFail(fn func(rec *Record) error)
	HeldCount() int
	Counts() (appends, completed int)
	MustWaitHeld(tb testing.TB, n int)
	Take(i int) *Record
	CompleteHeld(i int, err error) *Record
	ReleaseAll(err error)
}

// Fakes holds actorstest's constructors and helpers of the same names;
// bridge_test.go sets every field.
var Fakes struct {
	NewStore        func(users ...string) TestStore
	MustStore       func(tb testing.TB, users ...string) TestStore
	NewJournal      func(store TestStore, queueMax int) TestJournal
	MustJournal     func(tb testing.TB, store TestStore, queueMax int) TestJournal
	MustHeldJournal func(tb testing.TB, store TestStore) TestJournal
	NewSyncJournal  func(store TestStore) TestJournal
	NewNotifier     func() Notifier
	MustWait        func(tb testing.TB, c Changes, what string, cond func() bool)
	// InfoState is actorstest.DecodeInfo (strict) followed by Info.State.
	InfoState func(body []byte) (UserState, error)
}
