package api

import (
	"context"
	"errors"
	"strconv"

	"github.com/valyala/fasthttp"

	"merch/actors"
)

var errBadShard = errorBody("shard must be 0-255")

// InternalHandler serves forwarded API requests (they keep the hop and
// client headers) and the internal endpoints: GET /internal/owners and
// POST /internal/fold?shard=N.
func (s *Server) InternalHandler(owners func() []byte, fold func(ctx context.Context, shard actors.Shard) error) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		setRequestID(ctx) // a forwarded request keeps the id its first node gave it
		switch string(ctx.Path()) {
		case "/internal/owners":
			ctx.Response.Header.SetContentType("text/plain")
			ctx.Response.SetBodyRaw(owners())
		case "/internal/fold":
			n, err := strconv.Atoi(string(ctx.QueryArgs().Peek("shard")))
			if err != nil || n < 0 || n >= actors.ShardCount || !ctx.IsPost() {
				ctx.SetStatusCode(fasthttp.StatusBadRequest)
				ctx.Response.SetBodyRaw(errBadShard)
				return
			}
			c, cancel := context.WithTimeout(context.Background(), s.fwd.timeout)
			err = fold(c, actors.Shard(n))
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				err = actors.ErrUnavailable // the fold may still commit; the poller covers it
			}
			if err != nil {
				writeError(ctx, err)
				return
			}
			writeOK(ctx)
		default:
			s.handler(ctx)
		}
	}
}
