package actors_test

import (
	"testing"

	"merch/actors"
	"merch/actors/actorstest"
)

// init hands the shared fakes to package actors' internal tests, which
// cannot import actorstest: fakes_test.go declares actors.Fakes and says
// why this works.
func init() {
	f := &actors.Fakes
	f.NewStore = func(users ...string) actors.TestStore { return actorstest.NewStore(users...) }
	f.MustStore = func(tb testing.TB, users ...string) actors.TestStore {
		tb.Helper()
		return actorstest.MustStore(tb, users...)
	}
	f.NewJournal = func(s actors.TestStore, queueMax int) actors.TestJournal {
		return actorstest.NewJournal(s.(*actorstest.Store), queueMax)
	}
	f.MustJournal = func(tb testing.TB, s actors.TestStore, queueMax int) actors.TestJournal {
		tb.Helper()
		return actorstest.MustJournal(tb, s.(*actorstest.Store), queueMax)
	}
	f.MustHeldJournal = func(tb testing.TB, s actors.TestStore) actors.TestJournal {
		tb.Helper()
		return actorstest.MustHeldJournal(tb, s.(*actorstest.Store))
	}
	f.NewSyncJournal = func(s actors.TestStore) actors.TestJournal {
		return actorstest.NewSyncJournal(s.(*actorstest.Store))
	}
	f.NewNotifier = func() actors.Notifier { return new(actorstest.Notifier) }
	f.MustWait = actorstest.MustWait
	f.InfoState = func(body []byte) (actors.UserState, error) {
		in, err := actorstest.DecodeInfo(body)
		if err != nil {
			return actors.UserState{}, err
		}
		return in.State()
	}
}
