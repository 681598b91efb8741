package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

// noEnv is an empty environment.
func noEnv(string) (string, bool) { return "", false }

// TestHelp checks that help, --help and -h list every subcommand and exit 0, and that each
// subcommand's --help exits 0 with its own usage.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		var stdout bytes.Buffer
		if code := run(context.Background(), args, noEnv, &stdout, io.Discard); code != 0 {
			t.Errorf("%q: exit %d", args, code)
		}
		for _, cmd := range []string{"serve", "dev", "explain", "init", "version", "help", "NATS_URL"} {
			if !strings.Contains(stdout.String(), cmd) {
				t.Errorf("%q lacks %s:\n%s", args, cmd, stdout.String())
			}
		}
	}
	for _, cmd := range []string{"serve", "dev", "explain", "init"} {
		var stderr bytes.Buffer
		if code := run(context.Background(), []string{cmd, "--help"}, noEnv, io.Discard, &stderr); code != 0 {
			t.Errorf("%s --help: exit %d", cmd, code)
		}
		if !strings.Contains(stderr.String(), "Usage: nats-k8s-oidc-callout") {
			t.Errorf("%s --help:\n%s", cmd, stderr.String())
		}
	}
}

// TestServeStopsOnBadSettings runs serve as the binary does: a bad setting stops it with a
// message naming the setting, before anything connects anywhere.
func TestServeStopsOnBadSettings(t *testing.T) {
	env := map[string]string{"NATS_SIGNING_KEY_FILE": "/k", "NATS_ACCOUNT": "APP", "NATS_CREDS_FILE": "/c", "JWT_AUDIENCE": ""}
	var stderr bytes.Buffer
	code := run(context.Background(), nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "JWT_AUDIENCE is set but empty") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestRunUnknownCommand(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"bogus"}, noEnv, io.Discard, &stderr); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), `unknown command "bogus"`) {
		t.Errorf("stderr = %q", stderr.String())
	}
}

// TestInit runs the init subcommand as a user would: keys and files on the first run, a refusal
// to replace them silently, then a deliberate issuer rotation and its end.
func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	initCmd := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"init", "--out", dir}, args...), noEnv, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	if code, out, errOut := initCmd("--namespace", "nats"); code != 0 {
		t.Fatalf("first init: exit %d\n%s%s", code, out, errOut)
	}
	secret := filepath.Join(dir, "secret.yaml")
	st, err := os.Stat(secret)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("secret.yaml mode %v, want 0600", st.Mode().Perm())
	}
	conf, err := os.ReadFile(filepath.Join(dir, "nats-auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	values, err := os.ReadFile(filepath.Join(dir, "helm-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	issuer := regexp.MustCompile(`issuer: "(A[A-Z0-9]{55})"`).FindSubmatch(conf)
	if issuer == nil || !bytes.Contains(values, issuer[1]) {
		t.Fatalf("server config and Helm values do not name the same issuer:\n%s\n%s", conf, values)
	}
	before, _ := os.ReadFile(secret)

	code, _, errOut := initCmd("--namespace", "nats")
	if code == 0 || !strings.Contains(errOut, "--rotate") {
		t.Errorf("second init: exit %d, stderr %q; want a refusal pointing at --rotate", code, errOut)
	}
	if after, _ := os.ReadFile(secret); !bytes.Equal(before, after) {
		t.Error("a refused init changed secret.yaml")
	}

	if code, out, errOut := initCmd("--rotate"); code != 0 {
		t.Fatalf("init --rotate: exit %d\n%s%s", code, out, errOut)
	}
	rotated, _ := os.ReadFile(filepath.Join(dir, "nats-auth.conf"))
	if bytes.Contains(rotated, issuer[1]) {
		t.Error("after --rotate the server config still names the old issuer")
	}
	if code, out, errOut := initCmd("--finish-rotation"); code != 0 {
		t.Fatalf("init --finish-rotation: exit %d\n%s%s", code, out, errOut)
	}
}

// TestBuildVersion: version and commit are each shown once, whether they come from the
// Makefile's -ldflags or from the build information of `go install module@version`.
func TestBuildVersion(t *testing.T) {
	info := func(mainVersion string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Version: mainVersion}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	for _, c := range []struct {
		name, version, commit string
		bi                    *debug.BuildInfo
		wantV, wantC          string
	}{
		{"make, a release tag", "v0.1.0", "0123456", info("(devel)"), "v0.1.0", "0123456"},
		{"make, no tag", "dev", "0123456", info("(devel)"), "dev", "0123456"},
		{"make, uncommitted changes", "dev-dirty", "0123456", nil, "dev-dirty", "0123456"},
		{"an old build that used the hash as version", "0123456", "0123456", nil, "0123456", ""},
		{"an old build with a dirty hash as version", "0123456-dirty", "0123456", nil, "0123456-dirty", ""},
		{"go install module@v0.1.0", "dev", "unknown", info("v0.1.0"), "v0.1.0", ""},
		{"go install of a pseudo-version", "dev", "unknown", info("v0.0.0-20261201000000-0123456789ab"), "v0.0.0-20261201000000-0123456789ab", ""},
		{"go build in a checkout", "dev", "unknown", info("(devel)", "vcs.revision", rev, "vcs.modified", "false"), "dev", "0123456789ab"},
		{"go build with changes", "dev", "unknown", info("(devel)", "vcs.revision", rev, "vcs.modified", "true"), "dev", "0123456789ab-dirty"},
		{"go build, no VCS information", "dev", "unknown", info("(devel)"), "dev", ""},
		{"Go 1.24+ version from the checkout's tag", "dev", "unknown", info("v0.1.1-0.20261201000000-0123456789ab+dirty", "vcs.revision", rev, "vcs.modified", "true"), "v0.1.1-0.20261201000000-0123456789ab+dirty", ""},
	} {
		v, commit := buildVersion(c.version, c.commit, c.bi)
		if v != c.wantV || commit != c.wantC {
			t.Errorf("%s: buildVersion(%q, %q) = %q, %q; want %q, %q", c.name, c.version, c.commit, v, commit, c.wantV, c.wantC)
		}
	}

	var stdout bytes.Buffer
	if code := run(context.Background(), []string{"version"}, noEnv, &stdout, io.Discard); code != 0 {
		t.Fatalf("version: exit %d", code)
	}
	if !regexp.MustCompile(`^nats-k8s-oidc-callout \S+ \((commit \S+, )?go\S+\)\n$`).MatchString(stdout.String()) {
		t.Errorf("version prints %q", stdout.String())
	}
}
