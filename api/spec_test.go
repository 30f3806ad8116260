package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/valyala/fasthttp"
)

// The spec (openapi.yaml) and the server cannot drift: every response the
// tests get through testEnv.do and testEnv.raw is checked against it here
// (status declared for the route, declared headers present and valid, the
// body's schema), with openapi3filter.ValidateResponse.
//
// Two things are stricter than the document says, on purpose: every
// object schema of a response is checked as if each of its properties were
// required and no other allowed (the document keeps the assignment's
// required sets; the server always sends every field and nothing else),
// and a response declared without content must have no body and no
// Content-Type.
//
// Left out, by path: /internal/* (the node-to-node listener, not part of
// the public API). The admin listener's answers never pass through do.

// specExcluded are path prefixes the document deliberately does not
// describe.
var specExcluded = []string{"/internal/"}

// unroutedStatuses answer a request whatever its path, before or instead
// of routing (fasthttp's request errors, the connection caps); with 404
// for no such path and 405 for a path with another method.
var unroutedStatuses = map[int]string{
	400: "BadRequest", 408: "RequestTimeout", 413: "PayloadTooLarge", 429: "TooManyRequests",
	431: "HeadersTooLarge", 503: "Unavailable",
}

type specState struct {
	doc    *openapi3.T
	router routers.Router
	err    error
}

var (
	specOnce   sync.Once
	specLoaded specState
)

func mustSpec(tb testing.TB) *specState {
	tb.Helper()
	specOnce.Do(func() { specLoaded = loadSpec(OpenAPI) })
	if specLoaded.err != nil {
		tb.Fatalf("openapi.yaml: %v", specLoaded.err)
	}
	return &specLoaded
}

func loadSpec(data []byte) specState {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return specState{err: err}
	}
	if err := doc.Validate(context.Background()); err != nil {
		return specState{err: err}
	}
	doc.Servers = nil // match paths on any host (the tests' is merch.test)
	seen := map[*openapi3.Schema]bool{}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			for _, r := range op.Responses.Map() {
				strictResponse(r.Value, seen)
			}
		}
	}
	for _, r := range doc.Components.Responses {
		strictResponse(r.Value, seen)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return specState{err: err}
	}
	return specState{doc: doc, router: router}
}

func strictResponse(r *openapi3.Response, seen map[*openapi3.Schema]bool) {
	for _, mt := range r.Content {
		if mt.Schema != nil {
			strictSchema(mt.Schema.Value, seen)
		}
	}
}

// strictSchema requires every property of s's objects and allows no other.
func strictSchema(s *openapi3.Schema, seen map[*openapi3.Schema]bool) {
	if s == nil || seen[s] {
		return
	}
	seen[s] = true
	if s.Type.Is(openapi3.TypeObject) && len(s.Properties) > 0 {
		s.Required = s.Required[:0]
		for name := range s.Properties {
			s.Required = append(s.Required, name)
		}
		slices.Sort(s.Required)
		no := false
		s.AdditionalProperties = openapi3.AdditionalProperties{Has: &no}
	}
	for _, p := range s.Properties {
		strictSchema(p.Value, seen)
	}
	if s.Items != nil {
		strictSchema(s.Items.Value, seen)
	}
}

// checkSpec fails tb when resp, the answer to method path, is not what
// openapi.yaml declares.
func checkSpec(tb testing.TB, method, path string, resp *fasthttp.Response) {
	tb.Helper()
	if err := specMismatch(mustSpec(tb), method, path, resp); err != nil {
		tb.Errorf("%s %s: %d %q: not as openapi.yaml says: %v", method, path, resp.StatusCode(), resp.Body(), err)
	}
}

// specMismatch returns why resp does not match sp for method path (nil
// when it does).
func specMismatch(sp *specState, method, path string, resp *fasthttp.Response) error {
	for _, p := range specExcluded {
		if strings.HasPrefix(path, p) {
			return nil
		}
	}
	status := resp.StatusCode()
	header := http.Header{}
	resp.Header.SetNoDefaultContentType(true) // an absent Content-Type reads as absent
	for k, v := range resp.Header.All() {
		header.Add(string(k), string(v))
	}
	q, err := http.NewRequest(method, "http://merch.test"+path, nil)
	var route *routers.Route
	var params map[string]string
	if err == nil {
		route, params, err = sp.findRoute(q)
	}
	if err != nil { // no route: only the statuses any path can get
		if q == nil {
			q = &http.Request{Method: method, Header: http.Header{}}
		}
		route = unroutedRoute(sp.doc, sp.otherMethod(q), path, method)
	}
	ref := route.Operation.Responses.Status(status)
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: q, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	in.SetBodyBytes(resp.Body())
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return err
	}
	if ref != nil && len(ref.Value.Content) == 0 {
		if len(resp.Body()) > 0 || header.Get("Content-Type") != "" {
			return errors.New("declared without a body, answered with one (Content-Type " +
				strconv.Quote(header.Get("Content-Type")) + ")")
		}
	}
	return nil
}

// findRoute is the router's FindRoute, exact as the server's router is:
// the legacy router also matches a path with a trailing slash.
func (sp *specState) findRoute(q *http.Request) (*routers.Route, map[string]string, error) {
	route, params, err := sp.router.FindRoute(q)
	if err != nil {
		return nil, nil, err
	}
	want, got := strings.Split(route.Path, "/"), strings.Split(q.URL.Path, "/")
	if len(want) != len(got) {
		return nil, nil, routers.ErrPathNotFound
	}
	for i := range want {
		if param := strings.HasPrefix(want[i], "{"); param && got[i] == "" || !param && want[i] != got[i] {
			return nil, nil, routers.ErrPathNotFound
		}
	}
	return route, params, nil
}

// otherMethod reports whether q's path has a route with another method
// (the server answers 405, not 404).
func (sp *specState) otherMethod(q *http.Request) bool {
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH"} {
		if m == q.Method {
			continue
		}
		o := q.Clone(context.Background())
		o.Method = m
		if _, _, err := sp.findRoute(o); err == nil {
			return true
		}
	}
	return false
}

// unroutedRoute is a route whose operation answers what a request to no
// path of the document can get: 405 when the path has other methods, else
// 404, and the statuses of any path.
func unroutedRoute(doc *openapi3.T, methodNotAllowed bool, path, method string) *routers.Route {
	rs := openapi3.NewResponses()
	for status, name := range unroutedStatuses {
		rs.Set(strconv.Itoa(status), doc.Components.Responses[name])
	}
	if methodNotAllowed {
		rs.Set("405", doc.Components.Responses["MethodNotAllowed"])
	} else {
		rs.Set("404", doc.Components.Responses["NotFound"])
	}
	return &routers.Route{Spec: doc, Path: path, Method: method, Operation: &openapi3.Operation{Responses: rs}}
}

// requestLine returns the method and path of a raw request ("" when its
// first line is not one).
func requestLine(raw string) (method, path string) {
	line, _, _ := strings.Cut(raw, "\r\n")
	f := strings.Fields(line)
	if len(f) != 3 || !strings.HasPrefix(f[1], "/") {
		return "", "/"
	}
	return f[0], f[1]
}

// TestSpecServed: GET /openapi.yaml answers the embedded document as YAML,
// and the document loads and validates.
func TestSpecServed(t *testing.T) {
	t.Parallel()
	mustSpec(t)
	e := mustEnv(t, envConfig{})
	r := e.do(t, req{method: "GET", path: "/openapi.yaml"})
	if r.status != 200 || r.contentType != "application/yaml" || r.body != string(OpenAPI) {
		t.Fatalf("GET /openapi.yaml: %d %q, %d bytes, want 200 application/yaml, the document", r.status,
			r.contentType, len(r.body))
	}
}

// TestSpecCatchesDrift: the check fails on answers the document does not
// allow — a renamed field, a missing field, an extra field, an undeclared
// status, a body on a bodiless 200, a missing required header — so a
// passing suite means the server matches it.
func TestSpecCatchesDrift(t *testing.T) {
	t.Parallel()
	sp := mustSpec(t)
	broken := loadSpec([]byte(strings.Replace(string(OpenAPI), "fromUser:", "fromUserName:", 1)))
	if broken.err != nil {
		t.Fatal(broken.err)
	}
	info := `{"coins":1,"inventory":[],"coinHistory":{"received":[{"fromUser":"a","amount":1}],"sent":[]}}`
	answer := func(status int, contentType, body string, headers ...string) *fasthttp.Response {
		r := &fasthttp.Response{}
		r.SetStatusCode(status)
		if contentType != "" {
			r.Header.SetContentType(contentType)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Set(headers[i], headers[i+1])
		}
		r.SetBodyString(body)
		return r
	}
	id := []string{"X-Request-Id", "abc"}
	if err := specMismatch(sp, "GET", "/api/info", answer(200, "application/json", info, id...)); err != nil {
		t.Fatalf("a good answer: %v", err)
	}
	tests := []struct {
		name         string
		sp           *specState
		method, path string
		resp         *fasthttp.Response
	}{
		{"field renamed in the spec", &broken, "GET", "/api/info", answer(200, "application/json", info, id...)},
		{"field missing", sp, "GET", "/api/info", answer(200, "application/json", `{"coins":1,"inventory":[]}`, id...)},
		{"field extra", sp, "GET", "/api/info", answer(200, "application/json",
			strings.Replace(info, `"coins":1`, `"coins":1,"balance":1`, 1), id...)},
		{"wrong type", sp, "GET", "/api/info", answer(200, "application/json", strings.Replace(info, `"coins":1`, `"coins":"1"`, 1), id...)},
		{"status not declared", sp, "GET", "/api/info", answer(422, "application/json", `{"errors":"x"}`, id...)},
		{"body on a bodiless 200", sp, "GET", "/api/buy/cup", answer(200, "application/json", `{}`, id...)},
		{"Content-Type on a bodiless 200", sp, "GET", "/api/buy/cup", answer(200, "application/json", "", id...)},
		{"no X-Request-Id", sp, "GET", "/api/info", answer(200, "application/json", info)},
		{"503 without Retry-After", sp, "POST", "/api/sendCoin", answer(503, "application/json", `{"errors":"x"}`, id...)},
		{"token without Cache-Control", sp, "POST", "/api/auth", answer(200, "application/json", `{"token":"t"}`, id...)},
		{"error body not the shape", sp, "GET", "/api/info", answer(401, "application/json", `{"error":"x"}`, id...)},
		{"unknown path not 404", sp, "GET", "/nothing", answer(200, "application/json", `{"errors":"x"}`, id...)},
	}
	for _, tt := range tests {
		if err := specMismatch(tt.sp, tt.method, tt.path, tt.resp); err == nil {
			t.Errorf("%s: passed the check", tt.name)
		}
	}
}
