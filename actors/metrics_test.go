package actors

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// fakeMetrics counts observations. Safe for concurrent use.
type fakeMetrics struct {
	activated  atomic.Int64
	passivated atomic.Int64
	panicked   atomic.Int64
	replayed   atomic.Int64 // KeyReplayed, whatever its error
	processed  [kindCount]atomic.Int64
	waits      atomic.Int64
	changes    Notifier // notified after every observation
}

func newFakeMetrics() *fakeMetrics { return &fakeMetrics{changes: Fakes.NewNotifier()} }

func (m *fakeMetrics) MailboxWait(d time.Duration) {
	if d < 0 {
		panic("negative mailbox wait")
	}
	m.waits.Add(1)
}

func (m *fakeMetrics) Processed(k MessageKind, d time.Duration) {
	if d < 0 {
		panic("negative processing time")
	}
	m.processed[k].Add(1)
	m.changes.Notify()
}

// mustWaitProcessed waits until the counts of processed messages by kind
// reach want, then checks they did not pass it.
func (m *fakeMetrics) mustWaitProcessed(tb testing.TB, want [kindCount]int64) {
	tb.Helper()
	Fakes.MustWait(tb, m.changes, fmt.Sprintf("processed %v", want), func() bool {
		for k := range want {
			if m.processed[k].Load() < want[k] {
				return false
			}
		}
		return true
	})
	for k := range want {
		if got := m.processed[k].Load(); got != want[k] {
			tb.Errorf("processed %s = %d, want %d", MessageKind(k), got, want[k])
		}
	}
}

func (m *fakeMetrics) Activated() {
	m.activated.Add(1)
	m.changes.Notify()
}

func (m *fakeMetrics) Passivated() {
	m.passivated.Add(1)
	m.changes.Notify()
}

func (m *fakeMetrics) Panicked() {
	m.panicked.Add(1)
	m.changes.Notify()
}

func (m *fakeMetrics) KeyReplayed(error) {
	m.replayed.Add(1)
	m.changes.Notify()
}

func TestKindStrings(t *testing.T) {
	records := map[RecordKind]string{Registered: "registered", Purchased: "purchased",
		Transferred: "transferred", 0: "unknown", 9: "unknown"}
	for k, want := range records {
		if got := k.String(); got != want {
			t.Errorf("RecordKind(%d).String() = %q, want %q", k, got, want)
		}
	}
	messages := map[MessageKind]string{KindInfo: "info", KindBuy: "buy", KindSend: "send",
		KindCommitted: "committed", KindCredit: "credit", kindCount: "unknown"}
	for k, want := range messages {
		if got := k.String(); got != want {
			t.Errorf("MessageKind(%d).String() = %q, want %q", k, got, want)
		}
	}
	for i, k := range MessageKinds {
		if k != MessageKind(i) {
			t.Errorf("MessageKinds[%d] = %d", i, k)
		}
	}
}
