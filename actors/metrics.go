package actors

import "time"

// MessageKind classifies actor messages for metrics.
type MessageKind uint8

// Message kinds. Committed is a journal completion arriving back at the
// actor that appended the record; Credit is the second leg of a transfer.
const (
	KindInfo MessageKind = iota
	KindBuy
	KindSend
	KindCommitted
	KindCredit
	kindCount
)

// MessageKinds lists every kind, for resolving metric children up front.
var MessageKinds = [kindCount]MessageKind{KindInfo, KindBuy, KindSend, KindCommitted, KindCredit}

// String returns the metric label value.
func (k MessageKind) String() string {
	switch k {
	case KindInfo:
		return "info"
	case KindBuy:
		return "buy"
	case KindSend:
		return "send"
	case KindCommitted:
		return "committed"
	case KindCredit:
		return "credit"
	}
	return "unknown"
}

// Metrics observes the actor system. Implementations must be safe for
// concurrent use and cheap: they are called for every message.
type Metrics interface {
	MailboxWait(d time.Duration)                 // enqueue → start of processing
	Processed(kind MessageKind, d time.Duration) // time spent in Receive
	Activated()
	Passivated()
	Panicked() // a panic in Receive; the actor is rebuilt (and passivated later)
	// KeyReplayed: a keyed request was answered from its idempotency key.
	// err is nil or the remembered refusal (a replay), ErrKeyReused (the
	// key names another request) or ErrKeyInFlight (its first use is
	// still pending).
	KeyReplayed(err error)
}

// NopMetrics discards observations.
type NopMetrics struct{}

func (NopMetrics) MailboxWait(time.Duration)            {}
func (NopMetrics) Processed(MessageKind, time.Duration) {}
func (NopMetrics) Activated()                           {}
func (NopMetrics) Passivated()                          {}
func (NopMetrics) Panicked()                            {}
func (NopMetrics) KeyReplayed(error)                    {}

// Stats is a snapshot of gauges for metrics and tests.
type Stats struct {
	MailboxDepth    int64 // messages queued in user actors, total
	MailboxDepthMax int64 // deepest single mailbox
	Active          int64 // resident user actors
}
