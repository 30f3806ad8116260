package logs

import (
	"context"
	"log/slog"
	"time"
)

// Flush writes one summary record for every key that suppressed records in a
// window that has ended, and forgets every key whose window has ended: such a
// key behaves exactly like an unknown one, so dropping it loses nothing and
// keeps memory bounded. It also writes the untracked summary, if any. Summaries
// go to the handler given to NewLimiter, so they lack attributes and groups
// added with WithAttrs and WithGroup. Flush is safe to call concurrently with
// Handle.
func (l *Limiter) Flush() {
	l.st.emit(l.st.collect(false))
}

// Run calls Flush every interval until ctx ends. At the end it flushes once
// more, then reporting also windows that have not ended yet, so that no count
// is lost at shutdown. The caller owns the goroutine: go l.Run(ctx).
func (l *Limiter) Run(ctx context.Context) {
	t := time.NewTicker(l.st.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.st.emit(l.st.collect(true))
			return
		case <-t.C:
			l.Flush()
		}
	}
}

// collect builds the summary records under the lock and resets what they
// report; final also reports windows that have not ended. The result holds at
// most keysMax+1 records.
func (s *state) collect(final bool) []slog.Record {
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	var out []slog.Record
	for k, w := range s.keys {
		ended := now.Sub(w.start) >= s.interval
		if !ended && (!final || w.count == 0) {
			continue
		}
		if w.count > 0 {
			r := slog.NewRecord(now, k.level, k.msg, 0)
			r.AddAttrs(slog.Uint64("suppressed", w.count), slog.Duration("interval", s.interval))
			out = append(out, r)
		}
		if ended {
			delete(s.keys, k)
		} else {
			w.count = 0
		}
	}
	if s.untracked > 0 {
		r := slog.NewRecord(now, slog.LevelWarn, untrackedMsg, 0)
		r.AddAttrs(slog.Uint64("count", s.untracked))
		out = append(out, r)
		s.untracked = 0
	}
	return out
}

// emit writes summaries outside the lock, so a slow inner handler does not
// block Handle.
func (s *state) emit(recs []slog.Record) {
	ctx := context.Background()
	for _, r := range recs {
		if s.root.Enabled(ctx, r.Level) {
			// A failing writer has nowhere to report to but the log itself.
			_ = s.root.Handle(ctx, r)
		}
	}
}
