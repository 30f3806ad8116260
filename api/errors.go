package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/valyala/fasthttp"

	"merch/actors"
)

// Request errors found by this package.
var (
	errMalformedJSON  = errors.New("malformed JSON body")
	errAuthFields     = errors.New("username and password are required non-empty strings")
	errBadUsername    = errors.New("username must be 1-64 characters of letters, digits, '_', '-' or '.'")
	errBadPassword    = errors.New("password must be valid UTF-8 of 1-72 bytes")
	errSendFields     = errors.New("toUser (string) and amount (integer) are required")
	errBadKey         = errors.New("Idempotency-Key must be 1-64 printable ASCII characters")
	errNoToken        = errors.New("missing or malformed Authorization header")
	errBadToken       = errors.New("invalid or expired token")
	errWrongPassword  = errors.New("wrong password")
	errTooManyTries   = errors.New("too many failed logins; try again later")
	errNotFound       = errors.New("not found")
	errMethod         = errors.New("method not allowed")
	errBodyTooLarge   = errors.New("request body too large")
	errHeaderTooLarge = errors.New("request headers too large")
	errBadRequest     = errors.New("bad request")
	errTimeout        = errors.New("request timeout")
)

// errorReply is one row of the error → status table; body is encoded once.
// Every 429 and 503 carries Retry-After (seconds).
type errorReply struct {
	err        error
	status     int
	body       []byte
	retryAfter []byte
}

var headerRetryAfter = []byte("Retry-After")

// retryAfterDefault is the Retry-After of 503s and of 429s that name no
// better value: overload and outages clear in about a second; the login
// lockout sets its own (the window, see Server.loginRetryAfter).
var retryAfterDefault = []byte("1")

// errorReplies is the only place errors become statuses (docs/API.md codes).
var errorReplies = buildReplies([]struct {
	err    error
	status int
}{
	{errMalformedJSON, fasthttp.StatusBadRequest},
	{errAuthFields, fasthttp.StatusBadRequest},
	{errBadUsername, fasthttp.StatusBadRequest},
	{errBadPassword, fasthttp.StatusBadRequest},
	{errSendFields, fasthttp.StatusBadRequest},
	{errBadKey, fasthttp.StatusBadRequest},
	{errBadRequest, fasthttp.StatusBadRequest},
	{actors.ErrInsufficientCoins, fasthttp.StatusBadRequest},
	{actors.ErrUnknownItem, fasthttp.StatusBadRequest},
	{actors.ErrUnknownRecipient, fasthttp.StatusBadRequest},
	{actors.ErrSelfTransfer, fasthttp.StatusBadRequest},
	{actors.ErrBadAmount, fasthttp.StatusBadRequest},
	{actors.ErrKeyReused, fasthttp.StatusUnprocessableEntity},
	{errNoToken, fasthttp.StatusUnauthorized},
	{errBadToken, fasthttp.StatusUnauthorized},
	{errWrongPassword, fasthttp.StatusUnauthorized},
	// A valid token whose user does not exist (e.g. the database was reset).
	{actors.ErrUnknownUser, fasthttp.StatusUnauthorized},
	{errNotFound, fasthttp.StatusNotFound},
	{errMethod, fasthttp.StatusMethodNotAllowed},
	{errTimeout, fasthttp.StatusRequestTimeout},
	{actors.ErrKeyInFlight, fasthttp.StatusConflict},
	{errBodyTooLarge, fasthttp.StatusRequestEntityTooLarge},
	{errMisdirected, fasthttp.StatusMisdirectedRequest},
	{errTooManyTries, fasthttp.StatusTooManyRequests},
	{errRegisterRate, fasthttp.StatusTooManyRequests},
	{errHeaderTooLarge, fasthttp.StatusRequestHeaderFieldsTooLarge},
	{actors.ErrInternal, fasthttp.StatusInternalServerError},
	{actors.ErrOverloaded, fasthttp.StatusServiceUnavailable},
	{actors.ErrNotDurable, fasthttp.StatusServiceUnavailable},
	{actors.ErrUnavailable, fasthttp.StatusServiceUnavailable},
	{actors.ErrClosed, fasthttp.StatusServiceUnavailable},
	{actors.ErrNotOwner, fasthttp.StatusServiceUnavailable},
	{errNoOwner, fasthttp.StatusServiceUnavailable},
	{errForwardUnknown, fasthttp.StatusServiceUnavailable},
})

var internalBody = errorBody("internal error")

func buildReplies(rows []struct {
	err    error
	status int
}) []errorReply {
	out := make([]errorReply, len(rows))
	for i, r := range rows {
		out[i] = errorReply{err: r.err, status: r.status, body: errorBody(r.err.Error())}
		if r.status == fasthttp.StatusTooManyRequests || r.status == fasthttp.StatusServiceUnavailable {
			out[i].retryAfter = retryAfterDefault
		}
	}
	return out
}

// errorBody encodes {"errors": msg} as JSON: msg is escaped as a JSON
// string (control characters, quotes; invalid UTF-8 becomes U+FFFD), never
// as a Go literal, whose \x and \U escapes are not JSON.
func errorBody(msg string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"errors":`)
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(msg); err != nil { // a string always encodes
		panic("api: encode error body: " + err.Error())
	}
	b.Truncate(b.Len() - 1) // Encode's newline
	b.WriteByte('}')
	return b.Bytes()
}

// writeError answers err with its status and body. Unknown errors are 500
// and their text never leaks.
func writeError(ctx *fasthttp.RequestCtx, err error) {
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	for i := range errorReplies {
		if r := &errorReplies[i]; errors.Is(err, r.err) {
			ctx.SetStatusCode(r.status)
			if r.status == fasthttp.StatusServiceUnavailable {
				countShed(err) // merch_shed_total{reason}
			}
			ctx.Response.SetBodyRaw(r.body)
			if r.retryAfter != nil {
				ctx.Response.Header.SetBytesKV(headerRetryAfter, r.retryAfter)
			}
			return
		}
	}
	slog.Error("unexpected error", "path", string(ctx.Path()), "request_id", requestID(ctx), "err", err)
	ctx.SetStatusCode(fasthttp.StatusInternalServerError)
	ctx.Response.SetBodyRaw(internalBody)
}

var contentTypeJSON = []byte("application/json")
