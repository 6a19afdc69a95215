package main

import (
	"runtime"
	"runtime/debug"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3"
// (the Dockerfile does). Without it, the version comes from the module
// and version-control information Go stamps into the binary.
var version string

// buildVersion returns the version of this binary: the -ldflags value,
// else the module version, else "devel-<commit>" (with "-dirty" for
// uncommitted changes), else "devel".
func buildVersion() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}

// versionLine is what --version prints.
func versionLine() string { return "taskqueue " + buildVersion() + " (" + runtime.Version() + ")" }
