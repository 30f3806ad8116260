package actors

import "errors"

// call sends r to h and waits for the answer until the deadline. On
// timeout r is abandoned (the actor may still write to it) and ok is false.
func (s *System) call(h *handle, r *request, until int64) (rep reply, ok bool) {
	h.enqueue(r)
	t := getTimer(remaining(until))
	select {
	case rep = <-r.reply:
		putTimer(t)
		putRequest(r)
		return rep, true
	case <-t.C:
		putTimer(t)
		return reply{}, false
	}
}

// Info returns the user's /api/info body: durable state only. The slice is
// immutable and shared; callers must not modify it.
func (s *System) Info(name string) ([]byte, error) { return s.InfoTraced(name, nil) }

// InfoTraced is Info for a client request whose id (X-Request-Id) the log
// lines it causes name; rid is copied, not retained.
func (s *System) InfoTraced(name string, rid []byte) ([]byte, error) {
	until := monotime() + int64(s.cfg.ReadTimeout)
	h, err := s.resolvePinned(name, nil, int32(s.cfg.InflightPerUserMax), until, rid)
	if err != nil {
		return nil, err
	}
	r := getRequest()
	r.op, r.owner, r.held = opInfo, h, heldOwner
	r.setRequestID(rid)
	rep, ok := s.call(h, r, until)
	if !ok {
		return nil, ErrUnavailable
	}
	return rep.info, rep.err
}

// Buy buys one item. nil means the purchase is durable. key is an optional
// idempotency key ("" for none).
func (s *System) Buy(name string, item ItemID, key string) error {
	return s.BuyTraced(name, item, key, nil)
}

// BuyTraced is Buy for a client request with id rid (see InfoTraced).
func (s *System) BuyTraced(name string, item ItemID, key string, rid []byte) error {
	if !item.Valid() {
		return ErrUnknownItem
	}
	until := monotime() + int64(s.cfg.WriteTimeout)
	if key == "" {
		return s.buy(name, item, "", false, until, rid)
	}
	want := KeyedRequest{Key: key, Kind: Purchased, Item: item, Amount: item.Price()}
	return s.keyed(name, want, until, rid, func(checked bool) error { return s.buy(name, item, key, checked, until, rid) })
}

func (s *System) buy(name string, item ItemID, key string, checked bool, until int64, rid []byte) error {
	h, err := s.resolvePinned(name, nil, int32(s.cfg.InflightPerUserMax), until, rid)
	if err != nil {
		return err
	}
	r := getRequest()
	r.op, r.owner, r.held, r.item, r.key, r.keyChecked = opBuy, h, heldOwner, item, key, checked
	r.setRequestID(rid)
	return s.write(h, r, until)
}

// Send transfers amount from one user to another. nil means the transfer is
// durable and visible in both users' info. key is an optional idempotency
// key.
func (s *System) Send(from, to string, amount Coins, key string) error {
	return s.SendBytes(from, []byte(to), amount, key)
}

// SendBytes is Send with the recipient's name still in a request buffer; it
// is not retained.
func (s *System) SendBytes(from string, to []byte, amount Coins, key string) error {
	return s.SendBytesTraced(from, to, amount, key, nil)
}

// SendBytesTraced is SendBytes for a client request with id rid (see
// InfoTraced).
func (s *System) SendBytesTraced(from string, to []byte, amount Coins, key string, rid []byte) error {
	switch {
	case from == string(to):
		return ErrSelfTransfer
	case amount <= 0:
		return ErrBadAmount
	}
	until := monotime() + int64(s.cfg.WriteTimeout)
	if key == "" {
		return s.sendCoins(from, to, amount, "", false, until, rid)
	}
	want := KeyedRequest{Key: key, Kind: Transferred, Peer: string(to), Amount: amount}
	return s.keyed(from, want, until, rid, func(checked bool) error { return s.sendCoins(from, to, amount, key, checked, until, rid) })
}

func (s *System) sendCoins(from string, to []byte, amount Coins, key string, checked bool, until int64, rid []byte) error {
	if _, local := s.lease(ShardOfBytes(to)); !local {
		return s.sendRemote(from, string(to), amount, key, checked, until, rid)
	}
	h, err := s.resolvePinned(from, nil, int32(s.cfg.InflightPerUserMax), until, rid)
	if err != nil {
		return err
	}
	peer, err := s.resolvePinned("", to, 0, until, rid)
	if err != nil {
		h.unpinOwn()
		if errors.Is(err, ErrUnknownUser) {
			err = ErrUnknownRecipient
		}
		return err
	}
	r := getRequest()
	r.op, r.owner, r.peer, r.held, r.amount = opSend, h, peer, heldOwner|heldPeer, amount
	r.peerName, r.key, r.keyChecked = peer.name, key, checked
	r.setRequestID(rid)
	return s.write(h, r, until)
}

// write sends a change and waits for it to be durable, until the deadline.
func (s *System) write(h *handle, r *request, until int64) error {
	rep, ok := s.call(h, r, until)
	if !ok {
		return ErrNotDurable
	}
	return rep.err
}
