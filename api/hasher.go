package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"hash"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"merch/actors"
)

// Hasher runs bcrypt on a bounded pool of workers so a login storm cannot
// starve the other endpoints: when its queue is full, callers get
// actors.ErrOverloaded (503) at once. It also computes the fast keyed digest
// remembered after a successful verification, so repeated logins of a known
// user skip bcrypt. Safe for concurrent use.
type Hasher struct {
	cost    int
	jobs    chan *hashJob
	queued  atomic.Int64
	wg      sync.WaitGroup
	digests sync.Pool // of hash.Hash (HMAC-SHA256 with a per-process key)
	observe func(time.Duration)
}

type hashJob struct {
	password, hash []byte // hash is nil for a new hash
	deadline       time.Time
	out            []byte
	err            error
	done           chan struct{}
}

// HashWaitMax bounds how long a job may wait for a worker: a job not
// started by then is dropped and its caller gets actors.ErrOverloaded, so a
// login storm turns into fast 503s instead of ever longer queues.
const HashWaitMax = time.Second

// NewHasher starts workers goroutines with a queue of queueMax jobs.
// observe (may be nil) receives each hash's duration.
func NewHasher(cost, workers, queueMax int, observe func(time.Duration)) (*Hasher, error) {
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost || workers < 1 || queueMax < 1 {
		return nil, errors.New("api: bad hasher configuration")
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if observe == nil {
		observe = func(time.Duration) {}
	}
	h := &Hasher{cost: cost, jobs: make(chan *hashJob, queueMax), observe: observe}
	h.digests.New = func() any { return hmac.New(sha256.New, key) }
	h.wg.Add(workers)
	for range workers {
		go h.work()
	}
	return h, nil
}

// Close stops the workers after the queued jobs.
func (h *Hasher) Close() {
	close(h.jobs)
	h.wg.Wait()
}

// QueueDepth returns the number of jobs waiting or running.
func (h *Hasher) QueueDepth() int64 { return h.queued.Load() }

func (h *Hasher) work() {
	defer h.wg.Done()
	for j := range h.jobs {
		start := time.Now()
		if start.After(j.deadline) {
			j.err = actors.ErrOverloaded // its caller has given up
			h.queued.Add(-1)
			close(j.done)
			continue
		}
		if j.hash == nil {
			j.out, j.err = bcrypt.GenerateFromPassword(j.password, h.cost)
		} else {
			j.err = bcrypt.CompareHashAndPassword(j.hash, j.password)
		}
		h.observe(time.Since(start))
		h.queued.Add(-1)
		close(j.done)
	}
}

func (h *Hasher) run(password, hash []byte) (*hashJob, error) {
	j := &hashJob{password: bytes.Clone(password), hash: hash, done: make(chan struct{}),
		deadline: time.Now().Add(HashWaitMax)}
	h.queued.Add(1)
	select {
	case h.jobs <- j:
	default:
		h.queued.Add(-1)
		return nil, actors.ErrOverloaded
	}
	<-j.done // a started job finishes within one hash time of the deadline
	if errors.Is(j.err, actors.ErrOverloaded) {
		return nil, j.err
	}
	return j, nil
}

// Busy reports whether the queue is full: a request that needs a hash
// would be refused.
func (h *Hasher) Busy() bool { return len(h.jobs) == cap(h.jobs) }

// Hash returns a new bcrypt hash of password.
func (h *Hasher) Hash(password []byte) ([]byte, error) {
	j, err := h.run(password, nil)
	if err != nil {
		return nil, err
	}
	return j.out, j.err
}

// Compare reports whether password matches hash.
func (h *Hasher) Compare(hash, password []byte) (bool, error) {
	j, err := h.run(password, hash)
	if err != nil {
		return false, err
	}
	if errors.Is(j.err, bcrypt.ErrMismatchedHashAndPassword) {
		return false, nil
	}
	return j.err == nil, j.err
}

// Digest returns HMAC-SHA256(process key, name 0x00 password).
func (h *Hasher) Digest(name, password []byte) *[32]byte {
	m := h.digests.Get().(hash.Hash)
	m.Reset()
	m.Write(name)
	m.Write([]byte{0})
	m.Write(password)
	d := new([32]byte)
	m.Sum(d[:0])
	h.digests.Put(m)
	return d
}

// SameDigest compares digests in constant time.
func SameDigest(a, b *[32]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }
