package actors

// Account is a user's credentials as seen by authentication.
type Account struct{ h *handle }

// PasswordHash returns the stored bcrypt hash. Immutable; do not modify.
func (a Account) PasswordHash() []byte { return a.h.hash }

// Digest returns the fast password digest remembered after a successful
// verification, or nil. It lives as long as the user is resident.
func (a Account) Digest() *[32]byte { return a.h.digest.Load() }

// SetDigest remembers a verified password's digest.
func (a Account) SetDigest(d *[32]byte) { a.h.digest.Store(d) }

// Lookup resolves a user (loading it if needed) for authentication.
func (s *System) Lookup(name string) (Account, error) {
	h, err := s.resolve(name, monotime()+int64(s.cfg.LoadTimeout))
	if err != nil {
		return Account{}, err
	}
	return Account{h: h}, nil
}

// Resident reports whether the user's actor is in memory (no loading).
func (s *System) Resident(name string) bool {
	h := s.dir.stripe(name).get(name)
	return h != nil && h.isReady() && h.err == nil && !h.dead()
}
