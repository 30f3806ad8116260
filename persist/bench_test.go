package persist

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"merch/actors"
)

// counter completes records without blocking and counts them.
type counter struct {
	n    atomic.Int64
	fail atomic.Int64
	all  chan struct{}
	want int64
}

func (c *counter) JournalDone(err error) {
	if err != nil && c.fail.Add(1) == 1 {
		println("first failure:", err.Error())
	}
	if c.n.Add(1) == c.want {
		close(c.all)
	}
}

// BenchmarkJournal measures journal throughput into a real PostgreSQL:
// b.N records (9 in 10 transfers around a ring of 1000 users, so balances
// stay positive; 1 in 10 a pen) appended by parallel goroutines, retrying
// while the queue is full; reports records/s.
func BenchmarkJournal(b *testing.B) {
	_, pool := mustDB(b)
	cfg := journalConfig(pool, func(err error) { b.Errorf("fatal: %v", err) })
	cfg.QueueMax, cfg.BatchMax = 16384, 4096
	j := mustJournal(b, cfg)
	const users = 1000
	names := make([]string, users)
	for i := range names {
		names[i] = "bench" + strconv.Itoa(i)
		if err := mustAppend(b, j, register(names[i])); err != nil {
			b.Fatal(err)
		}
	}
	pen := item(b, "pen")
	c := &counter{all: make(chan struct{}), want: int64(b.N)}
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			rec := actors.Record{Kind: actors.Transferred, User: names[i%users], Peer: names[(i+1)%users], Amount: 1, Done: c}
			if i%10 == 0 {
				rec = actors.Record{Kind: actors.Purchased, User: names[(i/10)%users], Item: pen, Amount: pen.Price(), Done: c}
			}
			for j.Append(&rec) != nil {
				time.Sleep(50 * time.Microsecond) // queue full: back off, as a client would
			}
		}
	})
	<-c.all
	elapsed := time.Since(start)
	b.StopTimer()
	if c.fail.Load() != 0 {
		b.Fatalf("%d records failed", c.fail.Load())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
}
