package logs

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const interval = 10 * time.Second

// clock is a fake time source; step is added on every reading.
type clock struct {
	ns   atomic.Int64
	step time.Duration
}

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Add(int64(c.step))) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// setup returns a Limiter writing text lines into a buffer, driven by a fake clock.
func setup(t *testing.T, keysMax int) (*Limiter, *bytes.Buffer, *clock) {
	t.Helper()
	var buf bytes.Buffer
	clk := &clock{}
	clk.ns.Store(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	l := NewLimiter(slog.NewTextHandler(&buf, nil), interval, keysMax)
	l.st.now = clk.now
	return l, &buf, clk
}

// lines splits the buffer into lines and empties it.
func lines(buf *bytes.Buffer) []string {
	s := strings.TrimSpace(buf.String())
	buf.Reset()
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func wantLines(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("line %d = %q, want it to contain %q", i, got[i], w)
		}
	}
}

func TestFloodWritesOneLineAndOneSummary(t *testing.T) {
	l, buf, clk := setup(t, 10)
	log := slog.New(l)
	for i := range 10000 {
		log.Error("load user failed", "user", i)
	}
	wantLines(t, lines(buf), `level=ERROR msg="load user failed" user=0`)

	l.Flush() // The window has not ended yet: nothing to report.
	wantLines(t, lines(buf))

	clk.advance(interval)
	l.Flush()
	wantLines(t, lines(buf), `level=ERROR msg="load user failed" suppressed=9999 interval=10s`)
	if got := l.Suppressed(); got != 9999 {
		t.Errorf("Suppressed() = %d, want 9999", got)
	}
	l.Flush() // Reported counts are reset.
	wantLines(t, lines(buf))
	if n := len(l.st.keys); n != 0 {
		t.Errorf("%d keys kept after their window ended, want 0", n)
	}
}

func TestKeyIsLevelAndMessage(t *testing.T) {
	l, buf, _ := setup(t, 10)
	log := slog.New(l)
	log.Info("a", "user", 1)
	log.Info("a", "user", 2) // Same key despite another attribute.
	log.Info("b", "user", 1) // Another message.
	log.Warn("a", "user", 3) // Another level.
	log.Warn("a", "user", 4)
	wantLines(t, lines(buf),
		`level=INFO msg=a user=1`,
		`level=INFO msg=b user=1`,
		`level=WARN msg=a user=3`)
	if got := l.Suppressed(); got != 2 {
		t.Errorf("Suppressed() = %d, want 2", got)
	}
}

func TestRecordAfterWindowCarriesCount(t *testing.T) {
	l, buf, clk := setup(t, 10)
	log := slog.New(l)
	for range 3 {
		log.Info("a", "k", "v")
	}
	clk.advance(interval)
	log.Info("a", "k", "w")
	log.Info("a", "k", "x") // Suppressed again: a new window started.
	wantLines(t, lines(buf), `msg=a k=v`, `msg=a k=w suppressed=2`)

	clk.advance(interval)
	log.Info("a")
	wantLines(t, lines(buf), `msg=a suppressed=1`)
	clk.advance(interval)
	log.Info("a") // Nothing suppressed in the last window: no attribute.
	if got := lines(buf); len(got) != 1 || strings.Contains(got[0], "suppressed") {
		t.Errorf("got %q, want one line without suppressed", got)
	}
}

func TestKeysMaxPassesUntrackedLines(t *testing.T) {
	l, buf, clk := setup(t, 2)
	log := slog.New(l)
	for _, m := range []string{"a", "b", "c", "c", "a"} {
		log.Info(m)
	}
	wantLines(t, lines(buf), `msg=a`, `msg=b`, `msg=c`, `msg=c`)
	if n := len(l.st.keys); n != 2 {
		t.Errorf("tracking %d keys, want 2", n)
	}

	clk.advance(interval)
	l.Flush()
	got := lines(buf)
	var untracked []string
	for _, s := range got {
		if strings.Contains(s, untrackedMsg) {
			untracked = append(untracked, s)
		}
	}
	wantLines(t, untracked, `level=WARN msg="log lines of untracked messages" count=2`)
	if len(got) != 2 { // The untracked summary and "a" suppressed=1.
		t.Errorf("flush wrote %q, want 2 lines", got)
	}
	l.Flush()
	wantLines(t, lines(buf))
}

func TestDerivedHandlersShareCounting(t *testing.T) {
	l, buf, clk := setup(t, 10)
	root := slog.New(l)
	derived := root.With("svc", "api").WithGroup("req")
	derived.Info("a", "id", 1)
	root.Info("a", "id", 2)
	derived.Info("a", "id", 3)
	wantLines(t, lines(buf), `msg=a svc=api req.id=1`)
	if got := l.Suppressed(); got != 2 {
		t.Errorf("Suppressed() = %d, want 2", got)
	}

	clk.advance(interval)
	derived.Info("a", "id", 4)
	wantLines(t, lines(buf), `msg=a svc=api req.id=4 req.suppressed=2`)
}

func TestDisabledRecordsSkipTheTable(t *testing.T) {
	var buf bytes.Buffer
	inner := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})
	l := NewLimiter(inner, interval, 10)
	if l.Enabled(context.Background(), slog.LevelInfo) {
		t.Error("Enabled(Info) = true, want false as the inner handler")
	}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "a", 0)
	if err := l.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if n := len(l.st.keys); n != 0 || buf.Len() != 0 {
		t.Errorf("disabled record: %d keys, output %q; want none", n, buf.String())
	}
}

func TestLongMessageKeyIsBounded(t *testing.T) {
	l, _, _ := setup(t, 10)
	msg := strings.Repeat("é", keyMsgMax) // 2 bytes a rune.
	slog.New(l).Info(msg)
	for k := range l.st.keys {
		if len(k.msg) > keyMsgMax || !strings.HasPrefix(msg, k.msg) {
			t.Errorf("key message has %d bytes, want a prefix of at most %d", len(k.msg), keyMsgMax)
		}
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	l, buf, _ := setup(t, 10)
	log := slog.New(l)
	log.Info("a")
	log.Info("a")
	lines(buf)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.Run(ctx)
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// The final flush reports the window that has not ended.
	wantLines(t, lines(buf), `msg=a suppressed=1 interval=10s`)
}

var suppressedRE = regexp.MustCompile(`suppressed=(\d+)`)

func TestConcurrentHandleAndFlush(t *testing.T) {
	l, buf, clk := setup(t, 100)
	clk.step = time.Millisecond // Windows roll over while goroutines log.
	log := slog.New(l)
	const workers, perWorker = 8, 10000

	stop := make(chan struct{})
	flushed := make(chan struct{})
	go func() { // Flush concurrently with Handle.
		defer close(flushed)
		for {
			select {
			case <-stop:
				return
			default:
				l.Flush()
				runtime.Gosched()
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				log.Info("msg"+strconv.Itoa(i%4), "worker", w)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-flushed

	var written, reported uint64
	for _, s := range lines(buf) {
		if !strings.Contains(s, "interval=") { // Not a Flush summary.
			written++
		}
		for _, m := range suppressedRE.FindAllStringSubmatch(s, -1) {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			reported += n
		}
	}
	if got := written + l.Suppressed(); got != workers*perWorker {
		t.Errorf("written %d + suppressed %d = %d, want %d", written, l.Suppressed(), got, workers*perWorker)
	}
	clk.advance(interval)
	l.Flush()
	for _, m := range suppressedRE.FindAllStringSubmatch(buf.String(), -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		reported += n
	}
	if reported != l.Suppressed() {
		t.Errorf("reported %d suppressed records, want %d", reported, l.Suppressed())
	}
}
