// Package api is the HTTP face of the store: the router, the four endpoints
// of docs/API.md (api/openapi.yaml, served at GET /openapi.yaml), JWT issue
// and verification (with a verified-token cache), password hashing on a
// bounded pool, request decoding, response encoding, the one table that
// maps errors to status codes, X-Request-Id, operational endpoints and HTTP
// metrics.
//
// Handlers keep nothing from *fasthttp.RequestCtx after they return: every
// value sent to the actors is copied or parsed first. api talks to the
// domain only through *actors.System and never sees pgx.
package api
