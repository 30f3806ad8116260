package api

import (
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"merch/actors"
)

// parsers pools fastjson parsers: parsing then allocates nothing. Values
// returned by the decoders alias the parser and are valid until it is put
// back.
var parsers fastjson.ParserPool

// decodeAuth parses {"username": string, "password": string}.
func decodeAuth(p *fastjson.Parser, body []byte) (name, password []byte, err error) {
	v, err := parseObject(p, body, "username", "password")
	if err != nil {
		return nil, nil, err
	}
	name, ok1 := stringField(v, "username")
	password, ok2 := stringField(v, "password")
	switch {
	case !ok1 || !ok2 || len(name) == 0 || len(password) == 0:
		return nil, nil, errAuthFields
	case !actors.ValidUsername(name):
		return nil, nil, errBadUsername
	case len(password) > actors.PasswordLenMax || !utf8.Valid(password) || loneSurrogate(body):
		return nil, nil, errBadPassword
	}
	return name, password, nil
}

// decodeSend parses {"toUser": string, "amount": integer}.
func decodeSend(p *fastjson.Parser, body []byte) (to []byte, amount actors.Coins, err error) {
	v, err := parseObject(p, body, "toUser", "amount")
	if err != nil {
		return nil, 0, err
	}
	to, ok := stringField(v, "toUser")
	a := v.Get("amount")
	if !ok || len(to) == 0 || a == nil || a.Type() != fastjson.TypeNumber {
		return nil, 0, errSendFields
	}
	n, err := a.Int64() // refuses fractions, exponents and int64 overflow
	if err != nil || n <= 0 {
		return nil, 0, actors.ErrBadAmount
	}
	if !actors.ValidUsername(to) {
		return nil, 0, actors.ErrUnknownRecipient // no such name can exist
	}
	return to, actors.Coins(n), nil
}

func stringField(v *fastjson.Value, key string) ([]byte, bool) {
	f := v.Get(key)
	if f == nil || f.Type() != fastjson.TypeString {
		return nil, false
	}
	b, err := f.StringBytes()
	return b, err == nil
}

// parseObject parses body, which must be one JSON object naming neither key
// twice. fastjson's parser is lenient (it takes numbers such as 010 or +1,
// unknown escapes and raw control characters), so the body is validated
// strictly first. Readers disagree on duplicate names (fastjson takes the
// first, encoding/json the last), so such a body is refused rather than read
// differently from a proxy or client library. Allocates nothing on success.
func parseObject(p *fastjson.Parser, body []byte, k1, k2 string) (*fastjson.Value, error) {
	if fastjson.ValidateBytes(body) != nil || rawControl(body) {
		return nil, errMalformedJSON
	}
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return nil, errMalformedJSON
	}
	n1, n2 := 0, 0
	v.GetObject().Visit(func(k []byte, _ *fastjson.Value) {
		switch string(k) {
		case k1:
			n1++
		case k2:
			n2++
		}
	})
	if n1 > 1 || n2 > 1 {
		return nil, errMalformedJSON
	}
	return v, nil
}

// rawControl reports whether a string in valid JSON body holds a raw control
// character. fastjson.Validate misses those that precede an escape in the
// same string ("\a\\n"); encoding/json and RFC 8259 refuse them.
func rawControl(body []byte) bool {
	in := false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			in = !in
		case c == '\\':
			i++ // escapes occur only inside strings; skip the escaped byte
		case c < 0x20 && in:
			return true
		}
	}
	return false
}

// loneSurrogate reports whether valid JSON body escapes a UTF-16 surrogate
// that is not half of a pair. No Unicode text contains one, and fastjson
// keeps such an escape as literal text (or drops the character after it), so
// a password would silently differ from what the client encoded.
func loneSurrogate(body []byte) bool {
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		i++ // the escaped byte: valid JSON has one, and \u has 4 hex digits
		if body[i] != 'u' {
			continue
		}
		r := hex4(body[i+1 : i+5])
		i += 4
		switch {
		case r < 0xd800 || r > 0xdfff:
		case r >= 0xdc00:
			return true // a low half first
		case i+7 <= len(body) && body[i+1] == '\\' && body[i+2] == 'u' &&
			hex4(body[i+3:i+7]) >= 0xdc00 && hex4(body[i+3:i+7]) <= 0xdfff:
			i += 6
		default:
			return true
		}
	}
	return false
}

// hex4 decodes 4 hex digits (already validated as JSON).
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
