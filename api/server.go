package api

import (
	"context"
	"errors"
	"time"

	"github.com/fasthttp/router"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

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
	readyTimeout = time.Second
)

// Config builds a Server. Every field is required.
type Config struct {
	System  *actors.System
	Tokens  *Tokens
	Hasher  *Hasher
	Limiter *Limiter
	// Registry: HTTP metrics register here and /metrics serves it. nil
	// turns HTTP metrics and /metrics off (the metrics-overhead benchmark).
	Registry *prometheus.Registry
	// Ready reports whether the service can take writes (migrations ran,
	// the journal is writable).
	Ready func(ctx context.Context) error
}

// Server routes and answers HTTP requests. Safe for concurrent use.
type Server struct {
	sys     *actors.System
	tokens  *Tokens
	hasher  *Hasher
	limiter *Limiter
	ready   func(ctx context.Context) error
	metrics *httpMetrics
	handler fasthttp.RequestHandler
}

// New builds the router.
func New(cfg Config) (*Server, error) {
	if cfg.System == nil || cfg.Tokens == nil || cfg.Hasher == nil || cfg.Limiter == nil ||
		cfg.Ready == nil {
		return nil, errors.New("api: incomplete Config")
	}
	s := &Server{sys: cfg.System, tokens: cfg.Tokens, hasher: cfg.Hasher, limiter: cfg.Limiter,
		ready: cfg.Ready}
	if cfg.Registry != nil {
		s.metrics = newHTTPMetrics(cfg.Registry)
	}
	s.handler = s.routes(cfg.Registry)
	return s, nil
}

// Handler returns the request handler.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handler }

// HTTPServer returns a fasthttp server with this package's limits.
func (s *Server) HTTPServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       s.handler,
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
		// carry bearer tokens and passwords.
		SecureErrorLogMessage: true,
	}
}

// requestError answers requests fasthttp could not parse, in the API's
// error shape.
func requestError(ctx *fasthttp.RequestCtx, err error) {
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

func (s *Server) routes(reg *prometheus.Registry) fasthttp.RequestHandler {
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

	r.GET("/healthz", s.wrap(routeHealth, healthz))
	r.GET("/readyz", s.wrap(routeReady, s.readyz))
	if reg != nil {
		metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		r.GET("/metrics", s.wrap(routeMetrics, metrics))
	}
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

var okBody = []byte(`{"status":"ok"}`)

func healthz(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.Response.SetBodyRaw(okBody)
}

var notReadyBody = errorBody("not ready: database writes unavailable")

func (s *Server) readyz(ctx *fasthttp.RequestCtx) {
	c, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	if err := s.ready(c); err != nil {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.Response.SetBodyRaw(notReadyBody)
		return
	}
	ctx.Response.SetBodyRaw(okBody)
}
