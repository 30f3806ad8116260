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
// starve the other endpoints: when a queue is full, callers get
// actors.ErrOverloaded (503) at once. Verifications of existing users and
// hashes of new ones wait in separate queues, and a free worker always
// takes a verification first: a flood of registrations cannot make the
// logins of existing users wait behind it. It also computes the fast keyed
// digest remembered after a successful verification, so repeated logins of
// a known user skip bcrypt. Safe for concurrent use.
type Hasher struct {
	cost    int
	verify  chan *hashJob // Compare: existing users, served first
	hash    chan *hashJob // Hash: new users
	quit    chan struct{}
	queued  atomic.Int64
	cap     int64 // jobs that can wait or run: both queues and the workers
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

// NewHasher starts workers goroutines with two queues (verifications and
// new hashes) of queueMax jobs each. observe (may be nil) receives each
// hash's duration.
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
	h := &Hasher{cost: cost, verify: make(chan *hashJob, queueMax), hash: make(chan *hashJob, queueMax),
		quit: make(chan struct{}), observe: observe, cap: int64(2*queueMax + workers)}
	h.digests.New = func() any { return hmac.New(sha256.New, key) }
	h.wg.Add(workers)
	for range workers {
		go h.work()
	}
	return h, nil
}

// Close stops the workers after the queued jobs. No job may be submitted
// after Close.
func (h *Hasher) Close() {
	close(h.quit)
	h.wg.Wait()
}

// QueueDepth returns the number of jobs waiting or running.
func (h *Hasher) QueueDepth() int64 { return h.queued.Load() }

// QueueCapacity returns the most jobs QueueDepth can count: both queues
// and one running job per worker.
func (h *Hasher) QueueCapacity() int64 { return h.cap }

func (h *Hasher) work() {
	defer h.wg.Done()
	for {
		select { // verifications first, whatever else waits
		case j := <-h.verify:
			h.do(j)
			continue
		default:
		}
		select {
		case j := <-h.verify:
			h.do(j)
		case j := <-h.hash:
			h.do(j)
		case <-h.quit:
			h.drain()
			return
		}
	}
}

// drain finishes the jobs still queued at Close.
func (h *Hasher) drain() {
	for {
		select {
		case j := <-h.verify:
			h.do(j)
		case j := <-h.hash:
			h.do(j)
		default:
			return
		}
	}
}

func (h *Hasher) do(j *hashJob) {
	start := time.Now()
	if start.After(j.deadline) {
		j.err = errHashQueueFull // its caller has given up
		h.queued.Add(-1)
		close(j.done)
		return
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

func (h *Hasher) run(password, hash []byte) (*hashJob, error) {
	j := &hashJob{password: bytes.Clone(password), hash: hash, done: make(chan struct{}),
		deadline: time.Now().Add(HashWaitMax)}
	q := h.hash
	if hash != nil {
		q = h.verify
	}
	h.queued.Add(1)
	select {
	case q <- j:
	default:
		h.queued.Add(-1)
		return nil, errHashQueueFull
	}
	<-j.done // a started job finishes within one hash time of the deadline
	if errors.Is(j.err, actors.ErrOverloaded) {
		return nil, j.err
	}
	return j, nil
}

// Busy reports whether both queues are full: any request that needs bcrypt
// would be refused.
func (h *Hasher) Busy() bool {
	return len(h.verify) == cap(h.verify) && len(h.hash) == cap(h.hash)
}

// Capacity returns the jobs each queue holds at most.
func (h *Hasher) Capacity() int { return cap(h.hash) }

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
