package actorstest

import (
	"sync"
	"testing"
	"time"
)

// FailAfter bounds every wait of these helpers. It only turns a hang into a
// failure; nothing waits for it to pass.
const FailAfter = 10 * time.Second

// Notifier is a broadcast condition: a waiter takes Changed before it
// evaluates its condition, and the owner calls Notify after every change,
// so no wake-up is lost. The zero value is ready; safe for concurrent use.
type Notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// Changed returns a channel closed at the next Notify.
func (n *Notifier) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

// Notify wakes every waiter. It allocates nothing when nobody waits.
func (n *Notifier) Notify() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// MustWait blocks until cond holds; c must announce every change cond
// depends on (a *Notifier, a Store, a Journal). It fails tb after
// FailAfter. The parameter is an interface literal so that a function
// variable of the same signature can be declared without this package
// (actors/fakes_test.go).
func MustWait(tb testing.TB, c interface{ Changed() <-chan struct{} }, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(FailAfter)
	defer deadline.Stop()
	for {
		ch := c.Changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("timed out after %v waiting for %s", FailAfter, what)
		}
	}
}
