package actorstest

import (
	"errors"
	"sync"
	"testing"

	"merch/actors"
)

// outcomes records completions in order. Safe for concurrent use.
type outcomes struct {
	mu   sync.Mutex
	errs []error
}

// done returns the Completion of the record numbered i.
func (o *outcomes) done(i int) actors.Completion { return completion{o, i} }

func (o *outcomes) get() []error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]error(nil), o.errs...)
}

type completion struct {
	o *outcomes
	i int
}

func (c completion) JournalDone(err error) {
	c.o.mu.Lock()
	for len(c.o.errs) <= c.i {
		c.o.errs = append(c.o.errs, errors.New("not completed"))
	}
	c.o.errs[c.i] = err
	c.o.mu.Unlock()
}

func buy(user string, o *outcomes, i int) *actors.Record {
	return &actors.Record{Kind: actors.Purchased, User: user, Item: 4, Amount: 10, Done: o.done(i)}
}

func TestJournalCommits(t *testing.T) {
	s := MustStore(t, "alice")
	j := MustJournal(t, s, 8)
	var o outcomes
	for i := range 3 {
		if err := j.Append(buy("alice", &o, i)); err != nil {
			t.Fatal(err)
		}
	}
	MustWait(t, j, "three completions", func() bool { _, c := j.Counts(); return c == 3 })
	if errs := o.get(); len(errs) != 3 || errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("outcomes %v", errs)
	}
	if st, _ := s.State("alice"); st.Coins != 970 || st.Inventory[4] != 3 {
		t.Fatalf("store %+v", st)
	}
	boom := errors.New("boom")
	j.SetRefuse(func(*actors.Record) error { return actors.ErrOverloaded })
	if err := j.Append(buy("alice", &o, 3)); !errors.Is(err, actors.ErrOverloaded) {
		t.Fatalf("refused Append = %v", err)
	}
	j.SetRefuse(nil)
	j.SetFail(func(*actors.Record) error { return boom })
	if err := j.Append(buy("alice", &o, 4)); err != nil {
		t.Fatal(err)
	}
	MustWait(t, j, "the failed record", func() bool { _, c := j.Counts(); return c == 4 })
	if errs := o.get(); !errors.Is(errs[4], boom) {
		t.Fatalf("failed record completed with %v", errs[4])
	}
	if st, _ := s.State("alice"); st.Coins != 970 {
		t.Fatalf("a failed record was applied: %+v", st)
	}
	if a, c := j.Counts(); a != 4 || c != 4 {
		t.Fatalf("counts %d/%d, want 4/4 (a refused record is not appended)", a, c)
	}
}

// TestJournalQueueBounded: with no writer the queue fills and Append
// answers ErrOverloaded; Close completes what was queued with ErrClosed,
// and Append answers ErrClosed from then on.
func TestJournalQueueBounded(t *testing.T) {
	s := MustStore(t, "alice")
	j := NewJournal(s, 2) // not started: records stay queued
	var o outcomes
	for i := range 2 {
		if err := j.Append(buy("alice", &o, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Append(buy("alice", &o, 2)); !errors.Is(err, actors.ErrOverloaded) {
		t.Fatalf("Append to a full queue = %v", err)
	}
	j.Close()
	if errs := o.get(); len(errs) != 2 || !errors.Is(errs[0], actors.ErrClosed) || !errors.Is(errs[1], actors.ErrClosed) {
		t.Fatalf("outcomes %v", errs)
	}
	if err := j.Append(buy("alice", &o, 3)); !errors.Is(err, actors.ErrClosed) {
		t.Fatalf("Append after Close = %v", err)
	}
	j.Close() // again: nothing happens
}

func TestJournalHeld(t *testing.T) {
	s := MustStore(t, "alice")
	j := MustHeldJournal(t, s)
	var o outcomes
	for i := range 3 {
		if err := j.Append(buy("alice", &o, i)); err != nil {
			t.Fatal(err)
		}
	}
	j.MustWaitHeld(t, 3)
	if rec := j.CompleteHeld(1, nil); rec.Done != o.done(1) {
		t.Fatalf("completed %+v, want the second record", *rec)
	}
	j.CompleteHeld(0, actors.ErrUnavailable)
	if errs := o.get(); len(errs) != 2 || !errors.Is(errs[0], actors.ErrUnavailable) || errs[1] != nil {
		t.Fatalf("outcomes %v", errs)
	}
	if st, _ := s.State("alice"); st.Coins != 990 {
		t.Fatalf("store %+v", st)
	}
	j.Close() // completes the held record; cleanup's Close does nothing
	if errs := o.get(); len(errs) != 3 || !errors.Is(errs[2], actors.ErrClosed) || j.HeldCount() != 0 {
		t.Fatalf("outcomes %v, %d held", errs, j.HeldCount())
	}
}

func TestSyncJournal(t *testing.T) {
	s := MustStore(t, "alice")
	j := NewSyncJournal(s)
	var o outcomes
	if err := j.Append(buy("alice", &o, 0)); err != nil {
		t.Fatal(err)
	}
	if errs := o.get(); len(errs) != 1 || errs[0] != nil {
		t.Fatalf("not completed inside Append: %v", errs)
	}
	if st, _ := s.State("alice"); st.Coins != 990 {
		t.Fatalf("store %+v", st)
	}
	j.SetHold(true)
	if err := j.Append(buy("alice", &o, 1)); err != nil || j.HeldCount() != 1 {
		t.Fatalf("held Append = %v, %d held", err, j.HeldCount())
	}
	j.ReleaseAll(nil)
	if a, c := j.Counts(); a != 2 || c != 2 {
		t.Fatalf("counts %d/%d", a, c)
	}
}
