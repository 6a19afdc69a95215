package httpapi

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"
)

// The embedded description is a valid OpenAPI document, and it has
// exactly the routes the router has, each with the role the route needs.
// (The black-box tests check every exchange against it.)
func TestSpecDescribesEveryRoute(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not valid: %v", err)
	}
	inSpec := map[string]string{} // "METHOD /path" → role ("" for open)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			role, _ := op.Extensions["x-required-role"].(string)
			if op.Security != nil && len(*op.Security) == 0 && role != "" {
				t.Errorf("%s %s is open and needs %q", method, path, role)
			}
			inSpec[method+" "+path] = role
		}
	}
	a := New(nil, Options{Metrics: http.NotFoundHandler()}, logrus.New())
	routed := map[string]string{}
	err = a.router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		path, _ := route.GetPathTemplate()
		methods, _ := route.GetMethods()
		for _, m := range methods {
			k := m + " " + path
			need, ok := a.needs[k]
			if !ok {
				t.Errorf("%s is routed without a role", k)
			}
			routed[k] = ""
			if need != 0 {
				routed[k] = need.String()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing, extra []string
	for k := range routed {
		if _, ok := inSpec[k]; !ok {
			missing = append(missing, k)
		}
	}
	for k := range inSpec {
		if _, ok := routed[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("routes not in the spec: %s\nspec operations not routed: %s", strings.Join(missing, ", "), strings.Join(extra, ", "))
	}
	for k, role := range inSpec {
		if routed[k] != role {
			t.Errorf("%s: spec says role %q, the route needs %q", k, role, routed[k])
		}
	}
}
