package test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/taskqueue/taskqueue"

// deps returns the non-standard packages pkg imports, directly or not.
func deps(t *testing.T, pkg string) []string {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestDependencyDirection holds the hexagon: domain <- ports <-
// application <- adapters <- cmd, and adapters never import each other.
func TestDependencyDirection(t *testing.T) {
	allowed := map[string][]string{
		module + "/domain":      {module + "/domain", "github.com/google/uuid"},
		module + "/ports":       {module + "/ports", module + "/domain", "github.com/google/uuid"},
		module + "/application": {module + "/application", module + "/ports", module + "/domain", "github.com/google/uuid", "github.com/sirupsen/logrus", "golang.org/x/sys"},
	}
	for pkg, ok := range allowed {
		for _, d := range deps(t, pkg) {
			if !hasPrefixAny(d, ok) {
				t.Errorf("%s depends on %s", pkg, d)
			}
		}
	}
	out, err := exec.Command("go", "list", module+"/adapters/...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, adapter := range strings.Fields(string(out)) {
		for _, d := range deps(t, adapter) {
			if strings.HasPrefix(d, module+"/adapters/") && d != adapter {
				t.Errorf("adapter %s imports adapter %s", adapter, d)
			}
			if strings.HasPrefix(d, module+"/application") || strings.HasPrefix(d, module+"/cmd") {
				t.Errorf("adapter %s imports %s", adapter, d)
			}
		}
	}
}

func hasPrefixAny(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if s == p || strings.HasPrefix(s, p+"/") {
			return true
		}
	}
	return false
}
