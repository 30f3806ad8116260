package actors

import "strconv"

// appendInfo appends the /api/info body for w (API contract shape: arrays are
// never null, one entry per item type and per counterparty). It is written by
// hand because the shape is fixed and the result is cached per actor.
func appendInfo(dst []byte, w *Wallet) []byte {
	dst = append(dst, `{"coins":`...)
	dst = strconv.AppendInt(dst, int64(w.coins), 10)
	dst = append(dst, `,"inventory":[`...)
	first := true
	for id := ItemID(1); id <= itemCount; id++ {
		if w.items[id] == 0 {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, `{"type":`...)
		dst = appendString(dst, id.Name())
		dst = append(dst, `,"quantity":`...)
		dst = strconv.AppendInt(dst, w.items[id], 10)
		dst = append(dst, '}')
	}
	dst = append(dst, `],"coinHistory":{"received":`...)
	dst = appendTotals(dst, w.received, `{"fromUser":`)
	dst = append(dst, `,"sent":`...)
	dst = appendTotals(dst, w.sent, `{"toUser":`)
	return append(dst, `}}`...)
}

func appendTotals(dst []byte, totals []Counterparty, open string) []byte {
	dst = append(dst, '[')
	for i, c := range totals {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, open...)
		dst = appendString(dst, c.User)
		dst = append(dst, `,"amount":`...)
		dst = strconv.AppendInt(dst, int64(c.Amount), 10)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// appendString appends s as a JSON string. Usernames and item names are
// restricted to safe ASCII, but escaping keeps the output valid regardless.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// infoSizeHint estimates the encoded size, so the body is built in one
// allocation instead of growing through several.
func (w *Wallet) infoSizeHint() int {
	n := 96
	for id := ItemID(1); id <= itemCount; id++ {
		if w.items[id] != 0 {
			n += 48
		}
	}
	for _, c := range w.received {
		n += 32 + len(c.User)
	}
	for _, c := range w.sent {
		n += 30 + len(c.User)
	}
	return n
}
