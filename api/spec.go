package api

import (
	_ "embed" // the OpenAPI document

	"github.com/valyala/fasthttp"
)

// OpenAPI is the API's OpenAPI 3 document (openapi.yaml), served at
// GET /openapi.yaml on the public listener. The api package's tests check
// every response they get against it (spec_test.go).
//
//go:embed openapi.yaml
var OpenAPI []byte

var contentTypeYAML = []byte("application/yaml")

// spec answers GET /openapi.yaml with the embedded document (shared,
// never modified).
func spec(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentTypeBytes(contentTypeYAML)
	ctx.Response.SetBodyRaw(OpenAPI)
}
