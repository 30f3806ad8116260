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
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return nil, nil, errMalformedJSON
	}
	name, ok1 := stringField(v, "username")
	password, ok2 := stringField(v, "password")
	switch {
	case !ok1 || !ok2 || len(name) == 0 || len(password) == 0:
		return nil, nil, errAuthFields
	case !actors.ValidUsername(name):
		return nil, nil, errBadUsername
	case len(password) > actors.PasswordLenMax || !utf8.Valid(password):
		return nil, nil, errBadPassword
	}
	return name, password, nil
}

// decodeSend parses {"toUser": string, "amount": integer}.
func decodeSend(p *fastjson.Parser, body []byte) (to []byte, amount actors.Coins, err error) {
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return nil, 0, errMalformedJSON
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
