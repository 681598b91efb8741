package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"

	"k8s.io/client-go/rest"
)

// syncBuffer collects output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func TestDevCheck(t *testing.T) {
	checkSteps := []string{
		"allowed publish delivered",
		"refused publish",
		"refused token: garbage",
		"refused token: signed by another key",
		"refused token: unknown serviceaccount",
		"request/reply via private inbox",
		"shared _INBOX refused",
	}
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"encrypted", nil},
		{"plain", []string{"--xkey=false"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var stdout, stderr syncBuffer
			args := append([]string{"dev", "--check", "--dir", dir, "--log-format", "json"}, tt.args...)
			if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
				t.Fatalf("dev --check exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
			}
			out := stdout.String()
			for _, step := range checkSteps {
				if !strings.Contains(out, "PASS "+step+": ") {
					t.Errorf("no PASS line for %q in:\n%s", step, out)
				}
			}
			if strings.Contains(out, "FAIL") || strings.Contains(out, "SKIP") {
				t.Errorf("stdout has FAIL or SKIP lines:\n%s", out)
			}
			logs := stderr.String()
			for _, want := range []string{`"result":"allowed"`, `"reason":"malformed_token"`, `"reason":"bad_signature"`, `"reason":"serviceaccount_not_found"`} {
				if !strings.Contains(logs, want) {
					t.Errorf("decision logs lack %s:\n%s", want, logs)
				}
			}
			assertNoSecrets(t, dir, out+logs)
		})
	}
}

// assertNoSecrets checks that no seed or token written to dir appears in output.
func assertNoSecrets(t *testing.T, dir, output string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".nk") && !strings.HasSuffix(path, ".token") {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if mode := info.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %o, want 600", path, mode)
		}
		secret, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if s := strings.TrimSpace(string(secret)); s == "" || strings.Contains(output, s) {
			t.Errorf("the content of %s appears in the output (or is empty)", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDevCheckFails(t *testing.T) {
	// A ServiceAccount that may publish nothing leaves no scenario to run: that is a failure,
	// not a pass with nothing checked.
	manifest := writeManifest(t, t.TempDir(), `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: mute
  namespace: team
  annotations:
    nats.io/denied-pub-subjects: ">"
`)
	var stdout, stderr syncBuffer
	code := run(context.Background(), []string{"dev", "--check", "--manifest", manifest, "--dir", t.TempDir()}, &stdout, &stderr)
	if code == 0 {
		t.Fatalf("dev --check exited 0 without a scenario\nstdout:\n%s", stdout.String())
	}
	if !strings.Contains(stdout.String(), "FAIL scenario: ") {
		t.Errorf("stdout lacks the FAIL line:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "dev --check: 1 step(s) failed") {
		t.Errorf("stderr lacks the summary:\n%s", stderr.String())
	}
}

func writeManifest(t *testing.T, dir, content string) string {
	t.Helper()
	path := filepath.Join(dir, "serviceaccounts.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// devInstance is dev mode running in the background of a test.
type devInstance struct {
	url, dir string
	stdout   *syncBuffer
}

func startDev(t *testing.T, args ...string) *devInstance {
	t.Helper()
	d := &devInstance{dir: t.TempDir(), stdout: &syncBuffer{}}
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	args = append([]string{"dev", "--dir", d.dir, "--port", "0", "--http-addr", "127.0.0.1:0"}, args...)
	go func() { done <- run(ctx, args, d.stdout, &stderr) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("dev exited %d\nstderr:\n%s", code, stderr.String())
		}
	})
	urlRE := regexp.MustCompile(`NATS URL\s+(nats://\S+)`)
	waitFor(t, "dev to print its instructions", 30*time.Second, func() bool {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("dev exited %d before it was ready\nstderr:\n%s", code, stderr.String())
		default:
		}
		return strings.Contains(d.stdout.String(), "Ctrl-C stops")
	})
	m := urlRE.FindStringSubmatch(d.stdout.String())
	if m == nil {
		t.Fatalf("no NATS URL in:\n%s", d.stdout.String())
	}
	d.url = m[1]
	return d
}

func (d *devInstance) tokenFile(ns, name string) string {
	return filepath.Join(d.dir, "tokens", ns, name+".token")
}

// connect logs in as a ServiceAccount with its token file; asynchronous errors go to the channel.
func (d *devInstance) connect(t *testing.T, ns, name string) (*nats.Conn, <-chan error, error) {
	t.Helper()
	tok, err := os.ReadFile(d.tokenFile(ns, name))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	nc, err := nats.Connect(d.url, nats.Token(string(tok)), nats.NoReconnect(),
		nats.CustomInboxPrefix(kube.InboxPrefix(ns, name)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, errs, err
}

// delivered reports whether a message from ns/pub on subject reaches ns2/sub, on fresh
// connections.
func (d *devInstance) delivered(t *testing.T, pubNS, pub, subNS, sub, subject string) bool {
	t.Helper()
	s, _, err := d.connect(t, subNS, sub)
	if err != nil {
		t.Fatalf("connect as %s/%s: %v", subNS, sub, err)
	}
	defer s.Close()
	msgs, err := s.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	p, _, err := d.connect(t, pubNS, pub)
	if err != nil {
		t.Fatalf("connect as %s/%s: %v", pubNS, pub, err)
	}
	defer p.Close()
	if err := p.Publish(subject, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	_, err = msgs.NextMsg(250 * time.Millisecond)
	return err == nil
}

func TestDevHotReload(t *testing.T) {
	mdir := t.TempDir()
	const base = `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: a
  namespace: team
%s---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: b
  namespace: other
`
	manifest := writeManifest(t, mdir, strings.Replace(base, "%s", "", 1))
	d := startDev(t, "--manifest", manifest)

	// Before: team/a may not publish into the other namespace.
	nc, errs, err := d.connect(t, "team", "a")
	if err != nil {
		t.Fatalf("connect as team/a: %v", err)
	}
	if err := nc.Publish("other.news", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("publish to other.news: got %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish to other.news was not refused")
	}
	nc.Close()

	// Annotate team/a: the next connection may publish there.
	writeManifest(t, mdir, strings.Replace(base, "%s", "  annotations:\n    nats.io/allowed-pub-subjects: other.news\n", 1))
	waitFor(t, "the new permission on a new connection", 10*time.Second, func() bool {
		return d.delivered(t, "team", "a", "other", "b", "other.news")
	})

	// Remove other/b: its token is refused from then on.
	writeManifest(t, mdir, "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n  namespace: team\n")
	waitFor(t, "other/b to be refused", 10*time.Second, func() bool {
		_, _, err := d.connect(t, "other", "b")
		return errors.Is(err, nats.ErrAuthorization)
	})

	// A manifest that does not parse keeps the last good one.
	writeManifest(t, mdir, "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  nmae: typo\n") //nolint:misspell // the typo is the test
	waitFor(t, "team/a still accepted", 10*time.Second, func() bool {
		_, _, err := d.connect(t, "team", "a")
		return err == nil
	})
}

func TestDevPrintsCommands(t *testing.T) {
	d := startDev(t)
	out := d.stdout.String()
	orders := d.tokenFile("shop", "orders")
	for _, want := range []string{
		"NATS URL       " + d.url,
		"nats -s " + d.url + ` --token "$(cat ` + orders + `)" pub billing.charges.create hello`,
		"nats -s " + d.url + ` --token "$(cat ` + orders + `)" pub billing.invoices.demo hello`,
		"--token not-a-serviceaccount-token",
		`--token "$(cat ` + d.tokenFile("billing", "payments") + `)" reply billing.charges.create`,
		"--inbox-prefix _INBOX_shop_orders req billing.charges.create hello",
		`export NATS_URL=` + d.url + ` NATS_TOKEN="$(cat ` + orders + `)"`,
		`nats.TokenHandler(func() string {`,
		`os.ReadFile("` + orders + `")`,
		`nats.CustomInboxPrefix("_INBOX_shop_orders")`,
		// Shown working at start, before anything is pasted.
		"Just now, with nats.go",
		"  PASS allowed publish delivered: ",
		"  PASS refused publish: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, sa := range []string{"shop/orders", "shop/storefront", "billing/payments", "billing/auditor"} {
		ns, name, _ := strings.Cut(sa, "/")
		if !strings.Contains(out, d.tokenFile(ns, name)) {
			t.Errorf("output lacks the token file of %s", sa)
		}
	}
	assertNoSecrets(t, d.dir, out)
	// The printed commands work: the allowed one is delivered.
	if !d.delivered(t, "shop", "orders", "billing", "payments", "billing.charges.create") {
		t.Error("billing.charges.create from shop/orders did not reach billing/payments")
	}
}

func TestDevPortFallback(t *testing.T) {
	first := startDev(t)
	port := first.url[strings.LastIndex(first.url, ":")+1:]
	second := startDev(t, "--port", port)
	if second.url == first.url {
		t.Fatalf("second instance claims the busy %s", first.url)
	}
	if want := "Port " + port + " is busy: nats-server listens on " + second.url + " instead."; !strings.Contains(second.stdout.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, second.stdout.String())
	}
}

func TestPlanDemo(t *testing.T) {
	sas, err := kube.ParseServiceAccounts(mustRead(t, defaultDevManifest))
	if err != nil {
		t.Fatal(err)
	}
	p, err := planDemo(devAccounts(sas, kube.PolicyDefaults{}))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{p.Publisher.String(), p.Subject, p.Responder.String(), p.Refused}
	want := []string{"shop/orders", "billing.charges.create", "billing/payments", "billing.invoices.demo"}
	if strings.Join(got, " ") != strings.Join(want, " ") || !p.InboxRefused {
		t.Errorf("plan = %v inbox refused %v, want %v and true", got, p.InboxRefused, want)
	}

	// A lone ServiceAccount answers itself and is refused outside its namespace.
	alone, err := kube.ParseServiceAccounts([]byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: solo\n  namespace: team\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err = planDemo(devAccounts(alone, kube.PolicyDefaults{}))
	if err != nil {
		t.Fatal(err)
	}
	if p.Publisher.String() != "team/solo" || p.Responder.String() != "team/solo" || p.Subject != "team.demo" || p.Refused != "demo.refused" {
		t.Errorf("lone plan = %+v", p)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseConfig(t *testing.T) {
	env := map[string]string{
		"NATS_SIGNING_KEY_FILE": "/keys/issuer.nk",
		"NATS_ACCOUNT":          "APP",
		"NATS_CREDS_FILE":       "/keys/service.nk",
		"CALLOUT_WORKERS":       "8",
		"LOG_LEVEL":             "debug",
	}
	c, err := parseConfig([]string{"--log-level", "warn"}, lookupIn(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSURL != "nats://127.0.0.1:4222" || c.JWKSURL != defaultJWKSURL || !c.InCluster || c.Audience != "nats" || c.HTTPAddr != ":8080" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.Workers != 8 || c.SigningKeyFile != "/keys/issuer.nk" {
		t.Errorf("environment not applied: %+v", c)
	}
	if c.LogLevel != "warn" {
		t.Errorf("LogLevel = %q: the flag must override the environment", c.LogLevel)
	}
	if c.jwksURLSet {
		t.Error("JWKS URL reported as set")
	}
}

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

func TestParseConfigErrors(t *testing.T) {
	valid := map[string]string{
		"NATS_SIGNING_KEY_FILE": "/keys/issuer.nk",
		"NATS_ACCOUNT":          "APP",
		"NATS_CREDS_FILE":       "/keys/service.nk",
	}
	tests := []struct {
		name string
		env  map[string]string // merged over valid; "" removes
		args []string
		want string // the setting the error must name
	}{
		{"bad url", map[string]string{"NATS_URL": "127.0.0.1 4222"}, nil, "NATS_URL"},
		{"no signing key", map[string]string{"NATS_SIGNING_KEY_FILE": ""}, nil, "NATS_SIGNING_KEY_FILE"},
		{"no account", map[string]string{"NATS_ACCOUNT": ""}, nil, "NATS_ACCOUNT"},
		{"system account", map[string]string{"NATS_ACCOUNT": "SYS"}, nil, "NATS_ACCOUNT"},
		{"no creds", map[string]string{"NATS_CREDS_FILE": ""}, nil, "NATS_CREDS_FILE"},
		{"in-cluster not a boolean", map[string]string{"K8S_IN_CLUSTER": "maybe"}, nil, "K8S_IN_CLUSTER"},
		{"empty audience", nil, []string{"--jwt-audience="}, "JWT_AUDIENCE"},
		{"empty issuer", nil, []string{"--jwt-issuer="}, "JWT_ISSUER"},
		{"max ttl not a duration", map[string]string{"USER_JWT_MAX_TTL": "forever"}, nil, "USER_JWT_MAX_TTL"},
		{"negative max ttl", map[string]string{"USER_JWT_MAX_TTL": "-1m"}, nil, "USER_JWT_MAX_TTL"},
		{"workers not a number", map[string]string{"CALLOUT_WORKERS": "many"}, nil, "CALLOUT_WORKERS"},
		{"negative workers", map[string]string{"CALLOUT_WORKERS": "-1"}, nil, "CALLOUT_WORKERS"},
		{"zero request timeout", map[string]string{"CALLOUT_REQUEST_TIMEOUT": "0s"}, nil, "CALLOUT_REQUEST_TIMEOUT"},
		{"request timeout above auth timeout", map[string]string{"CALLOUT_REQUEST_TIMEOUT": "30s"}, nil, "CALLOUT_REQUEST_TIMEOUT"},
		{"jwks refresh too short", map[string]string{"JWKS_REFRESH_INTERVAL": "5s"}, nil, "JWKS_REFRESH_INTERVAL"},
		{"jwks url", map[string]string{"JWKS_URL": "not a url"}, nil, "JWKS_URL"},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL"},
		{"log format", map[string]string{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT"},
		{"http addr", map[string]string{"HTTP_ADDR": "8080"}, nil, "HTTP_ADDR"},
		{"default pub template", map[string]string{"DEFAULT_PUB_SUBJECTS": "{nope}.>"}, nil, "DEFAULT_PUB_SUBJECTS"},
		{"default sub subject", map[string]string{"DEFAULT_SUB_SUBJECTS": "a..b"}, nil, "DEFAULT_SUB_SUBJECTS"},
		{"annotation limit", map[string]string{"ANNOTATION_SUBJECT_LIMIT": "{namespace}.>,x.>.y"}, nil, "ANNOTATION_SUBJECT_LIMIT"},
		{"tls ca missing", map[string]string{"NATS_TLS_CA_FILE": "/nonexistent/ca.pem"}, nil, "NATS_TLS_CA_FILE"},
		{"tls cert without key", map[string]string{"NATS_TLS_CERT_FILE": "/nonexistent/tls.crt"}, nil, "NATS_TLS_KEY_FILE"},
		{"flag overrides a good env with a bad value", nil, []string{"--nats-account", "SYS"}, "NATS_ACCOUNT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range valid {
				env[k] = v
			}
			for k, v := range tt.env {
				if v == "" {
					delete(env, k)
				} else {
					env[k] = v
				}
			}
			_, err := parseConfig(tt.args, lookupIn(env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one naming %s", err, tt.want)
			}
		})
	}

	// user:password in the URL replaces the creds file.
	env := map[string]string{"NATS_SIGNING_KEY_FILE": "/k", "NATS_ACCOUNT": "APP", "NATS_URL": "nats://svc:pw@127.0.0.1:4222"}
	if _, err := parseConfig(nil, lookupIn(env), io.Discard); err != nil {
		t.Errorf("NATS_URL with user:password and no NATS_CREDS_FILE: %v", err)
	}
}

func TestParseDevConfig(t *testing.T) {
	c, err := parseDevConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 4222 || c.HTTPAddr != "127.0.0.1:8080" || !c.XKey || c.Manifest != defaultDevManifest || c.LogFormat != "text" {
		t.Errorf("defaults: %+v", c)
	}
	c, err = parseDevConfig([]string{"--check"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 0 || c.HTTPAddr != "127.0.0.1:0" {
		t.Errorf("--check must pick free ports unless told otherwise: port %d, http %s", c.Port, c.HTTPAddr)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--manifest", "m.yaml", "--kubeconfig", "k"}, "--manifest and --kubeconfig"},
		{[]string{"--namespaces", "a"}, "--namespaces needs --kubeconfig"},
		{[]string{"--port", "70000"}, "--port"},
		{[]string{"--token-ttl", "1m"}, "--token-ttl"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--http-addr", "8080"}, "--http-addr"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		if _, err := parseDevConfig(tt.args, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseDevConfig(%q) error = %v, want one naming %s", tt.args, err, tt.want)
		}
	}
}

func TestRunUnknownCommand(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"bogus"}, io.Discard, &stderr); code != 1 {
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
		code := run(context.Background(), append([]string{"init", "--out", dir}, args...), &stdout, &stderr)
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

func TestExplain(t *testing.T) {
	env := func(kv map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
	}
	run := func(t *testing.T, vars map[string]string, args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := runExplain(context.Background(), append([]string{"--manifest", defaultDevManifest}, args...), env(vars), &out, &errOut)
		return out.String(), err
	}

	out, err := run(t, nil, "shop/orders", "billing.charges.create", "shop.admin.x", "_INBOX.x", "shop.*")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"publish    allow  shop.>  billing.charges.create\n",
		"deny   shop.admin.>\n",
		"subscribe  allow  shop.>  _INBOX_shop_orders.>\n",
		"inbox      _INBOX_shop_orders",
		"billing.charges.create: publish allowed, subscribe refused\n",
		"shop.admin.x: publish refused, subscribe allowed\n",
		"_INBOX.x: publish refused, subscribe refused\n",
		"shop.*: wildcards are not checked here",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// The same settings as serve, from the environment: a limit drops what reaches outside it.
	out, err = run(t, map[string]string{"ANNOTATION_SUBJECT_LIMIT": "{namespace}.>"}, "shop/orders", "billing.charges.create")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `ignored    nats.io/allowed-pub-subjects: dropped "billing.charges.create": outside the annotation subject limit shop.>`) ||
		!strings.Contains(out, "billing.charges.create: publish refused") {
		t.Errorf("with ANNOTATION_SUBJECT_LIMIT:\n%s", out)
	}

	// Refusals say why, as a decision would.
	if _, err := run(t, map[string]string{"WATCH_NAMESPACES": "billing"}, "shop/orders"); err == nil || !strings.Contains(err.Error(), "WATCH_NAMESPACES") {
		t.Errorf("namespace not watched: %v", err)
	}
	if _, err := run(t, map[string]string{"WATCH_NAMESPACES": "billing,shop"}, "shop/orders"); err != nil {
		t.Errorf("namespace watched: %v", err)
	}
	if _, err := run(t, nil, "shop/ghost"); err == nil || !strings.Contains(err.Error(), "serviceaccount_not_found") {
		t.Errorf("unknown ServiceAccount: %v", err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "sa.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: team\n  annotations:\n    nats.io/denied-pub-subjects: \"a..b\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var sink bytes.Buffer
	err = runExplain(context.Background(), []string{"--manifest", bad, "team/app"}, env(nil), &sink, &sink)
	if err == nil || !strings.Contains(err.Error(), "invalid_policy") {
		t.Errorf("invalid deny annotation: %v", err)
	}
	for _, args := range [][]string{{}, {"no-slash"}, {"/x"}} {
		if _, err := run(t, nil, args...); err == nil {
			t.Errorf("explain %q succeeded", args)
		}
	}
	if _, err := run(t, map[string]string{"DEFAULT_PUB_SUBJECTS": "{nope}"}, "shop/orders"); err == nil || !strings.Contains(err.Error(), "DEFAULT_PUB_SUBJECTS") {
		t.Errorf("bad DEFAULT_PUB_SUBJECTS: %v", err)
	}
}

func TestDiscoverIssuer(t *testing.T) {
	var calls, failFirst atomic.Int32
	var doc atomic.Value
	failFirst.Store(2)
	doc.Store(`{"issuer":"https://oidc.example.com/id/ABC","jwks_uri":"https://oidc.example.com/id/ABC/keys"}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) <= failFirst.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, doc.Load().(string))
	}))
	defer srv.Close()
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()

	// The API server answers after two failures: retried, then used.
	iss, err := discoverIssuer(ctx, &rest.Config{Host: srv.URL}, log, 30*time.Second)
	if err != nil || iss != "https://oidc.example.com/id/ABC" {
		t.Fatalf("discoverIssuer = %q, %v", iss, err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (two refused, one answered)", n)
	}

	// A document without a usable issuer, or no document at all, stops start-up with the reason.
	calls.Store(0)
	failFirst.Store(0)
	doc.Store(`{"issuer":""}`)
	if _, err := discoverIssuer(ctx, &rest.Config{Host: srv.URL}, log, time.Second); err == nil ||
		!strings.Contains(err.Error(), "no usable issuer") || !strings.Contains(err.Error(), "set JWT_ISSUER") {
		t.Errorf("empty issuer: %v", err)
	}
	if _, err := discoverIssuer(ctx, &rest.Config{Host: srv.URL + "/nowhere"}, log, time.Second); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("no document: %v", err)
	}
}
