package actorstest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"merch/actors"
)

// Info is an /api/info body (docs/API.md), decoded with encoding/json: it is
// built independently of the server's append functions.
type Info struct {
	Coins       actors.Coins `json:"coins"`
	Inventory   []InfoItem   `json:"inventory"`
	CoinHistory InfoHistory  `json:"coinHistory"`
}

// InfoItem is one inventory line.
type InfoItem struct {
	Type     string `json:"type"`
	Quantity int64  `json:"quantity"`
}

// InfoHistory is the coin history: one line per counterparty.
type InfoHistory struct {
	Received []InfoReceived `json:"received"`
	Sent     []InfoSent     `json:"sent"`
}

// InfoReceived is one received line: the total from one user.
type InfoReceived struct {
	FromUser string       `json:"fromUser"`
	Amount   actors.Coins `json:"amount"`
}

// InfoSent is one sent line: the total to one user.
type InfoSent struct {
	ToUser string       `json:"toUser"`
	Amount actors.Coins `json:"amount"`
}

// DecodeInfo decodes an /api/info body strictly: an unknown field,
// trailing data, or an array that is null or missing (the API always sends
// the three arrays) is an error. The error does not quote the body.
func DecodeInfo(body []byte) (Info, error) {
	var in Info
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return Info{}, err
	}
	if dec.More() {
		return Info{}, errors.New("trailing data")
	}
	if in.Inventory == nil || in.CoinHistory.Received == nil || in.CoinHistory.Sent == nil {
		return Info{}, errors.New("null or missing array")
	}
	return in, nil
}

// State returns the durable state the body shows: coins, inventory, and
// the history lines in the body's order (repeats kept, for the caller to
// check). An unknown item, an item listed twice or a quantity ≤ 0 is an
// error: the API lists each item held once.
func (in *Info) State() (actors.UserState, error) {
	st := actors.UserState{Coins: in.Coins}
	for _, it := range in.Inventory {
		id, ok := actors.LookupItem([]byte(it.Type))
		switch {
		case !ok:
			return actors.UserState{}, fmt.Errorf("unknown item %q", it.Type)
		case st.Inventory[id] != 0 || it.Quantity <= 0:
			return actors.UserState{}, fmt.Errorf("bad inventory line %+v", it)
		}
		st.Inventory[id] = it.Quantity
	}
	for _, c := range in.CoinHistory.Received {
		st.Received = append(st.Received, actors.Counterparty{User: c.FromUser, Amount: c.Amount})
	}
	for _, c := range in.CoinHistory.Sent {
		st.Sent = append(st.Sent, actors.Counterparty{User: c.ToUser, Amount: c.Amount})
	}
	return st, nil
}
