// Package logs rate-limits repeated log lines.
//
// The rule: every repeated log line is rate-limited. The first occurrence of
// a line is written, further occurrences within the interval are only
// counted, and the count is reported once per interval. A line is identified
// by its level and message only, never by its attributes, because a flood
// usually repeats one message with a different attribute each time.
//
// Memory is bounded: at most keysMax lines are tracked, each by at most
// keyMsgMax bytes of its message. Records of lines beyond that are written,
// never dropped, and counted in one "untracked" summary.
//
// Summary records keep the key's level and message and carry the attributes
// suppressed=N (records not written) and interval=D (the rate-limit window),
// for example:
//
//	time=2025-01-02T03:04:05.000Z level=ERROR msg="load user failed" suppressed=9999 interval=10s
package logs

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// keyMsgMax caps the bytes of a message kept as a key, so that long messages
// built from client input cannot grow the table without bound.
const keyMsgMax = 1024

// keysDefault replaces a non-positive keysMax, so that the table is bounded.
const keysDefault = 1000

// untrackedMsg is the message of the summary of records of untracked lines.
const untrackedMsg = "log lines of untracked messages"

// Limiter is a slog.Handler that rate-limits repeated records and passes the
// rest to an inner handler.
type Limiter struct {
	inner slog.Handler
	st    *state // Shared by all handlers derived with WithAttrs and WithGroup.
}

// key identifies a log line: the same message at another level is another line.
type key struct {
	level slog.Level
	msg   string
}

// window counts the records of one key suppressed since start.
type window struct {
	start time.Time
	count uint64
}

// state is the counting state shared by a Limiter and its derived handlers.
type state struct {
	root     slog.Handler // Summaries go here, without derived attributes or groups.
	interval time.Duration
	keysMax  int
	now      func() time.Time // Injectable so tests need not sleep.

	mu         sync.Mutex
	keys       map[key]*window
	untracked  uint64 // Records of new keys passed through while the table was full.
	suppressed uint64 // Total records suppressed, never reset.
}

// NewLimiter returns a Limiter that passes the first record of each line per
// interval to inner and counts the rest. It tracks at most keysMax lines.
// A non-positive interval means one second and a non-positive keysMax means
// keysDefault, so that neither can disable the bound.
func NewLimiter(inner slog.Handler, interval time.Duration, keysMax int) *Limiter {
	if interval <= 0 {
		interval = time.Second
	}
	if keysMax <= 0 {
		keysMax = keysDefault
	}
	return &Limiter{inner: inner, st: &state{
		root:     inner,
		interval: interval,
		keysMax:  keysMax,
		now:      time.Now,
		keys:     make(map[key]*window),
	}}
}

// Enabled delegates to the inner handler.
func (l *Limiter) Enabled(ctx context.Context, level slog.Level) bool {
	return l.inner.Enabled(ctx, level)
}

// Handle passes r to the inner handler unless it repeats a line already
// written in the current window. A record that opens a new window carries
// suppressed=N, the count of the previous window, when N > 0; with WithGroup
// that attribute lands inside the open group, like any attribute of r.
func (l *Limiter) Handle(ctx context.Context, r slog.Record) error {
	// Direct callers may skip Enabled; disabled records must not touch the table.
	if !l.inner.Enabled(ctx, r.Level) {
		return nil
	}
	prev, pass := l.st.admit(r.Level, r.Message)
	if !pass {
		return nil
	}
	if prev > 0 {
		// Clone so the caller's copy of r does not share the added attribute.
		r = r.Clone()
		r.AddAttrs(slog.Uint64("suppressed", prev))
	}
	return l.inner.Handle(ctx, r)
}

// WithAttrs returns a handler that adds attrs via the inner handler and
// shares this handler's counting state.
func (l *Limiter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Limiter{inner: l.inner.WithAttrs(attrs), st: l.st}
}

// WithGroup returns a handler that opens a group via the inner handler and
// shares this handler's counting state.
func (l *Limiter) WithGroup(name string) slog.Handler {
	return &Limiter{inner: l.inner.WithGroup(name), st: l.st}
}

// Suppressed returns how many records were suppressed in total.
func (l *Limiter) Suppressed() uint64 {
	l.st.mu.Lock()
	defer l.st.mu.Unlock()
	return l.st.suppressed
}

// admit decides whether a record passes. It returns the count of the
// previous window when the record opens a new window of a known key.
func (s *state) admit(level slog.Level, msg string) (prev uint64, pass bool) {
	k := key{level: level, msg: truncate(msg)}
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.keys[k]
	switch {
	case !ok && len(s.keys) >= s.keysMax:
		s.untracked++
		return 0, true
	case !ok:
		// Clone so the key does not pin the record's (possibly larger) message.
		k.msg = strings.Clone(k.msg)
		s.keys[k] = &window{start: now}
		return 0, true
	case now.Sub(w.start) < s.interval:
		w.count++
		s.suppressed++
		return 0, false
	default:
		prev, w.count, w.start = w.count, 0, now
		return prev, true
	}
}

// truncate cuts msg to at most keyMsgMax bytes on a rune boundary, so that
// summaries stay valid UTF-8.
func truncate(msg string) string {
	if len(msg) <= keyMsgMax {
		return msg
	}
	n := keyMsgMax
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return msg[:n]
}
