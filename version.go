package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

// versionInfo is the version and commit this binary reports (--version, the start-up log line,
// nats_callout_build_info).
func versionInfo() (string, string) {
	bi, _ := debug.ReadBuildInfo()
	return buildVersion(version, commit, bi)
}

func versionString() string {
	v, c := versionInfo()
	if c == "" {
		return fmt.Sprintf("nats-k8s-oidc-callout %s (%s)", v, runtime.Version())
	}
	return fmt.Sprintf("nats-k8s-oidc-callout %s (commit %s, %s)", v, c, runtime.Version())
}

// buildVersion returns the version and commit to show. `make build` sets both with -ldflags
// (VERSION is the release tag or "dev", never the commit); without them (`go install
// module@v1.2.3`, a plain `go build`) they come from the build information Go records. A commit
// that the version already contains (a pseudo-version ends in the commit hash) comes back
// empty, so that it is shown once.
func buildVersion(v, c string, bi *debug.BuildInfo) (string, string) {
	if bi != nil && v == "dev" && c == "unknown" {
		if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
			v = mv
		}
		c = ""
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				c = s.Value[:min(12, len(s.Value))]
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if c != "" && modified {
			c += "-dirty"
		}
	}
	if c == "unknown" {
		c = ""
	}
	if hash, bare := strings.TrimSuffix(c, "-dirty"), strings.TrimSuffix(v, "-dirty"); c != "" &&
		(strings.Contains(v, hash) || (len(bare) >= 7 && strings.HasPrefix(hash, bare))) {
		c = ""
	}
	return v, c
}
