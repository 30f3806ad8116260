package api

import (
	"errors"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"merch/actors"
)

// Limits of the HTTP server. Each one is documented in the README.
const (
	// BodyMax: the largest valid body is an auth request (64-byte name,
	// 72-byte password, JSON escapes): 4 KiB leaves room; larger is 413.
	BodyMax = 4 << 10
	// HeaderMax bounds the request line plus headers (fasthttp reads them
	// into one buffer of this size); larger is 431.
	HeaderMax    = 8 << 10
	readTimeout  = 10 * time.Second
	writeTimeout = 10 * time.Second
	idleTimeout  = 60 * time.Second
)

// Config builds a Server. Every field is required unless it says otherwise.
type Config struct {
	System  *actors.System
	Tokens  *Tokens
	Hasher  *Hasher
	Limiter *Limiter
	// Registrations limits new users per client address; nil: no limit.
	Registrations *Registrations
	// Registry: HTTP metrics register here. nil turns them off (the
	// metrics-overhead benchmark). /metrics itself is on the admin
	// listener (AdminHandler).
	Registry *prometheus.Registry
	// Router: in a cluster, which node serves a user (forward.go); nil for
	// a node alone. ForwardTimeout bounds one forwarded request.
	Router         Router
	ForwardTimeout time.Duration
}

// Server routes and answers the API's HTTP requests. Safe for concurrent
// use.
type Server struct {
	sys           *actors.System
	tokens        *Tokens
	hasher        *Hasher
	limiter       *Limiter
	registrations *Registrations
	// loginRetryAfter is the Retry-After of a login 429: the limiter's
	// window, the longest the lock can last.
	loginRetryAfter []byte
	metrics         *httpMetrics
	handler         fasthttp.RequestHandler
	router          Router
	fwd             *forwarder
	forwards        [forwardResults]atomic.Int64
}

// New builds the router.
func New(cfg Config) (*Server, error) {
	if cfg.System == nil || cfg.Tokens == nil || cfg.Hasher == nil || cfg.Limiter == nil {
		return nil, errors.New("api: incomplete Config")
	}
	if cfg.Router != nil && cfg.ForwardTimeout <= 0 {
		return nil, errors.New("api: a Router needs a ForwardTimeout")
	}
	s := &Server{sys: cfg.System, tokens: cfg.Tokens, hasher: cfg.Hasher, limiter: cfg.Limiter,
		registrations: cfg.Registrations, router: cfg.Router,
		fwd: &forwarder{timeout: cfg.ForwardTimeout, clients: map[string]*fasthttp.HostClient{}}}
	s.loginRetryAfter = strconv.AppendInt(nil, int64(math.Ceil(cfg.Limiter.Window().Seconds())), 10)
	if cfg.Registry != nil {
		s.metrics = newHTTPMetrics(cfg.Registry)
	}
	s.handler = s.routes()
	return s, nil
}

// Forwards returns how many forwarding attempts ended how, by result
// (merch_cluster_forwards_total{result}; see forward.go).
func (s *Server) Forwards() map[string]int64 {
	out := make(map[string]int64, forwardResults)
	for r, name := range forwardResultNames {
		out[name] = s.forwards[r].Load()
	}
	return out
}

// Handler returns the request handler.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handler }

// HTTPServer returns a fasthttp server with this package's limits.
func (s *Server) HTTPServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       s.public,
		Name:                          "merch-store",
		ReadTimeout:                   readTimeout,
		WriteTimeout:                  writeTimeout,
		IdleTimeout:                   idleTimeout,
		MaxRequestBodySize:            BodyMax,
		ReadBufferSize:                HeaderMax,
		DisablePreParseMultipartForm:  true,
		NoDefaultContentType:          true,
		CloseOnShutdown:               true,
		DisableHeaderNamesNormalizing: false,
		ErrorHandler:                  requestError,
		// Unparsable requests are logged; never with their bytes, which
		// carry bearer tokens and passwords: SecureErrorLogMessage covers
		// some of fasthttp's messages, connLogger all of them.
		SecureErrorLogMessage: true,
		Logger:                connLogger{},
	}
}

// requestError answers requests fasthttp could not parse, in the API's
// error shape.
func requestError(ctx *fasthttp.RequestCtx, err error) {
	setRequestID(ctx)
	var tooLarge *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, errBodyTooLarge)
	case errors.As(err, &tooLarge):
		writeError(ctx, errHeaderTooLarge)
	case isTimeout(err):
		writeError(ctx, errTimeout)
	default:
		writeError(ctx, errBadRequest)
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func (s *Server) routes() fasthttp.RequestHandler {
	r := router.New()
	r.RedirectTrailingSlash = false // a redirect is not the API's error shape
	r.RedirectFixedPath = false
	r.HandleOPTIONS = false
	r.HandleMethodNotAllowed = true
	r.NotFound = s.wrap(routeOther, func(ctx *fasthttp.RequestCtx) { writeError(ctx, errNotFound) })
	r.MethodNotAllowed = s.wrap(routeOther, func(ctx *fasthttp.RequestCtx) { writeError(ctx, errMethod) })

	r.POST("/api/auth", s.wrap(routeAuth, s.auth))
	r.GET("/api/info", s.wrap(routeInfo, s.info))
	r.POST("/api/sendCoin", s.wrap(routeSend, s.sendCoin))
	// One static route per item: a parameter route costs allocations; the
	// parameter route only answers unknown items.
	for _, id := range actors.Items() {
		r.GET("/api/buy/"+id.Name(), s.wrap(routeBuy, s.buyHandler(id)))
	}
	r.GET("/api/buy/{item}", s.wrap(routeBuy, s.buyHandler(0)))
	r.GET("/openapi.yaml", s.wrap(routeOther, spec))
	return r.Handler
}

// wrap records the route's metrics around h.
func (s *Server) wrap(rt route, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	if s.metrics == nil {
		return h
	}
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		h(ctx)
		s.metrics.observe(rt, ctx.Response.StatusCode(), time.Since(start))
	}
}
