package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

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
