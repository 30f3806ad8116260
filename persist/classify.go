package persist

import (
	"errors"
	"log/slog"
	"merch/actors"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// errorClass says what to do after an attempt.
type errorClass uint8

// classify sorts an attempt's error. Server errors other than the known
// transient classes are refusals of the content: the transaction was
// rolled back, and isolating the records responsible keeps the rest
// flowing. Anything that is not a server error (network, timeout, closed
// pool) is transient: the outcome is unknown and the marker resolves it.
func classify(err error) errorClass {
	switch {
	case err == nil:
		return classOK
	case errors.Is(err, errCommitted):
		return classCommitted
	case errors.Is(err, errSyncCancelled):
		return classUnconfirmed
	case errors.Is(err, errSuperseded), errors.Is(err, errMarkerAhead):
		return classFatal
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return classTransient
	}
	switch c := pgErr.Code; {
	case c == codeCommitted:
		return classCommitted
	case c == codeSuperseded || c == codeMarkerAhead || c == codeInvariant:
		return classFatal
	case c == codeNotOwner:
		return classNotOwner
	case pgerrcode.IsConnectionException(c), pgerrcode.IsTransactionRollback(c),
		pgerrcode.IsInsufficientResources(c), pgerrcode.IsOperatorIntervention(c),
		pgerrcode.IsSystemError(c), pgerrcode.IsInvalidTransactionState(c),
		pgerrcode.IsObjectNotInPrerequisiteState(c), pgerrcode.IsInternalError(c):
		return classTransient
	}
	return classRefused
}

func isServerError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr)
}

// logRefused reports a record the database refused on its own. Never the
// password hash; the server's message names the constraint, not the data.
func logRefused(r *actors.Record, err error) {
	code, msg := "", err.Error()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		code, msg = pgErr.Code, pgErr.Message
	}
	slog.Error("journal record refused by the database; answered 500", "kind", r.Kind.String(),
		"user", r.User, "peer", r.Peer, "item", r.Item.Name(), "amount", int64(r.Amount),
		"key", r.Key, "request_id", r.RequestID(), "sqlstate", code, "reason", msg)
}
