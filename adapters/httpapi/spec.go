package httpapi

import (
	_ "embed"
	"net/http"
)

// Spec is the API's OpenAPI description, served at GET /openapi.json. The
// black-box tests check every request they send and every answer they get
// against it, so it says what the code does.
//
//go:embed openapi.json
var Spec []byte

func serveSpec(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(Spec)
}
