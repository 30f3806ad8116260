package actors

import "errors"

// registration waits for a Registered record's outcome.
type registration chan error

func (r registration) JournalDone(err error) { r <- err }

// registerAttempts bounds Register's retries when a concurrent load of the
// name races it (each round either registers, finds the user, or sees the
// load end with nothing).
const registerAttempts = 4

// Register creates a user with StartingCoins; nil means the user is durable.
// ErrUserExists means the name is taken (verify the password instead).
func (s *System) Register(name string, passwordHash []byte) error {
	sp := s.dir.stripe(name)
	for range registerAttempts {
		sp.mu.Lock()
		if h := sp.m[name]; h != nil && !h.dead() {
			sp.mu.Unlock()
			if _, err := s.resolve(name, monotime()+int64(s.cfg.LoadTimeout)); !errors.Is(err, ErrUnknownUser) {
				if err == nil {
					err = ErrUserExists
				}
				return err
			}
			continue // a concurrent load found nothing; try again
		}
		shard := ShardOf(name)
		epoch, ok := s.lease(shard)
		if !ok {
			sp.mu.Unlock()
			return ErrNotOwner
		}
		h := newHandle(s, name, shard, epoch)
		sp.m[name] = h
		delete(sp.absent, name)
		sp.mu.Unlock()
		return s.register(sp, h, passwordHash)
	}
	return ErrUnavailable
}

func (s *System) register(sp *stripe, h *handle, hash []byte) error {
	done := make(registration, 1)
	rec := Record{Kind: Registered, User: h.name, Amount: StartingCoins, PasswordHash: hash, Epoch: h.epoch, Done: done}
	err := s.journal.Append(&rec)
	if err == nil {
		t := getTimer(s.cfg.WriteTimeout)
		select {
		case err = <-done:
		case <-t.C:
			err = ErrNotDurable
		}
		putTimer(t)
	}
	if err != nil {
		h.err = err
		sp.remove(h)
		close(h.ready)
		return err
	}
	h.hash = hash
	s.spawn(h, &user{h: h, sys: s, wallet: NewWallet()})
	return nil
}
