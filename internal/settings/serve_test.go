package settings

import (
	"bytes"
	"io"
	"maps"
	"strings"
	"testing"
	"time"
)

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

var validEnv = map[string]string{
	"NATS_SIGNING_KEY_FILE": "/keys/issuer.nk",
	"NATS_ACCOUNT":          "APP",
	"NATS_CREDS_FILE":       "/keys/service.nk",
}

func TestParseServe(t *testing.T) {
	env := maps.Clone(validEnv)
	env["CALLOUT_WORKERS"] = "8"
	env["LOG_LEVEL"] = "debug"
	c, err := ParseServe([]string{"--log-level", "warn"}, lookupIn(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSURL != "nats://127.0.0.1:4222" || c.JWKSURL != DefaultJWKSURL || c.Audience != "nats" || c.HTTPAddr != ":8080" ||
		c.RequestTimeout != 1500*time.Millisecond || c.JWKSRefresh != time.Hour || c.Log.Format != "json" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.MaxTTL != time.Hour {
		t.Errorf("USER_JWT_MAX_TTL = %s, want the default 1h", c.MaxTTL)
	}
	if c.Policy.MaxEntries != 1000 || c.Policy.Defaults().MaxEntries != 1000 {
		t.Errorf("ANNOTATION_MAX_ENTRIES = %d, want the default 1000 passed on to the policy", c.Policy.MaxEntries)
	}
	if c.Policy.MaxBytes != 16384 || c.Policy.Defaults().MaxBytes != 16384 {
		t.Errorf("ANNOTATION_MAX_BYTES = %d, want the default 16384 passed on to the policy", c.Policy.MaxBytes)
	}
	if c.Workers != 8 || c.SigningKeyFile != "/keys/issuer.nk" {
		t.Errorf("environment not applied: %+v", c)
	}
	if c.Log.Level != "warn" {
		t.Errorf("Log.Level = %q: the flag must override the environment", c.Log.Level)
	}
	if c.JWKSURLSet {
		t.Error("JWKS URL reported as set")
	}
	if c.Kube.InCluster {
		t.Error("K8S_IN_CLUSTER defaults to true outside a pod")
	}
}

func TestParseServeSources(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(Serve) bool
	}{
		{"a flag overrides a malformed env value", map[string]string{"CALLOUT_WORKERS": "many"}, []string{"--callout-workers", "3"},
			func(c Serve) bool { return c.Workers == 3 }},
		{"old flag name --workers", nil, []string{"--workers", "5"}, func(c Serve) bool { return c.Workers == 5 }},
		{"old flag name --request-timeout", nil, []string{"--request-timeout", "800ms"},
			func(c Serve) bool { return c.RequestTimeout == 800*time.Millisecond }},
		{"new flag name --callout-request-timeout", nil, []string{"--callout-request-timeout", "900ms"},
			func(c Serve) bool { return c.RequestTimeout == 900*time.Millisecond }},
		{"in a pod K8S_IN_CLUSTER defaults to true", map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, nil,
			func(c Serve) bool { return c.Kube.InCluster }},
		{"in a pod K8S_IN_CLUSTER=false holds", map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1", "K8S_IN_CLUSTER": "false"}, nil,
			func(c Serve) bool { return !c.Kube.InCluster }},
		{"JWKS_URL set", map[string]string{"JWKS_URL": "https://example.com/jwks"}, nil, func(c Serve) bool { return c.JWKSURLSet }},
		{"--jwks-url set", nil, []string{"--jwks-url", "https://example.com/jwks"}, func(c Serve) bool { return c.JWKSURLSet }},
		{"USER_JWT_MAX_TTL=0 leaves the token's expiry alone", map[string]string{"USER_JWT_MAX_TTL": "0"}, nil,
			func(c Serve) bool { return c.MaxTTL == 0 }},
		{"an optional setting set empty is off", map[string]string{"NATS_XKEY_FILE": "", "WATCH_NAMESPACES": ""}, nil,
			func(c Serve) bool { return c.XKeyFile == "" && c.Policy.Namespaces == "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := maps.Clone(validEnv)
			maps.Copy(env, tt.env)
			c, err := ParseServe(tt.args, lookupIn(env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("settings %+v", c)
			}
		})
	}
}

func TestParseServeErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string // merged over validEnv; "-" removes
		args []string
		want string // the setting the error must name
	}{
		{"bad url", map[string]string{"NATS_URL": "127.0.0.1 4222"}, nil, "NATS_URL"},
		{"no signing key", map[string]string{"NATS_SIGNING_KEY_FILE": "-"}, nil, "NATS_SIGNING_KEY_FILE"},
		{"no account", map[string]string{"NATS_ACCOUNT": "-"}, nil, "NATS_ACCOUNT"},
		{"system account", map[string]string{"NATS_ACCOUNT": "SYS"}, nil, "NATS_ACCOUNT"},
		{"no creds", map[string]string{"NATS_CREDS_FILE": "-"}, nil, "NATS_CREDS_FILE"},
		{"in-cluster not a boolean", map[string]string{"K8S_IN_CLUSTER": "maybe"}, nil, "K8S_IN_CLUSTER"},
		{"empty audience flag", nil, []string{"--jwt-audience="}, "JWT_AUDIENCE"},
		{"empty audience env", map[string]string{"JWT_AUDIENCE": ""}, nil, "JWT_AUDIENCE is set but empty"},
		{"empty account env", map[string]string{"NATS_ACCOUNT": ""}, nil, "NATS_ACCOUNT is set but empty"},
		{"empty workers env", map[string]string{"CALLOUT_WORKERS": ""}, nil, "CALLOUT_WORKERS is set but empty"},
		{"empty issuer", nil, []string{"--jwt-issuer="}, "JWT_ISSUER"},
		{"max ttl not a duration", map[string]string{"USER_JWT_MAX_TTL": "forever"}, nil, "USER_JWT_MAX_TTL"},
		{"negative max ttl", map[string]string{"USER_JWT_MAX_TTL": "-1m"}, nil, "USER_JWT_MAX_TTL"},
		{"workers not a number", map[string]string{"CALLOUT_WORKERS": "many"}, nil, "CALLOUT_WORKERS"},
		{"workers flag not a number", nil, []string{"--callout-workers", "many"}, "--callout-workers"},
		{"negative workers", map[string]string{"CALLOUT_WORKERS": "-1"}, nil, "CALLOUT_WORKERS"},
		{"zero request timeout", map[string]string{"CALLOUT_REQUEST_TIMEOUT": "0s"}, nil, "CALLOUT_REQUEST_TIMEOUT"},
		{"request timeout above auth timeout", map[string]string{"CALLOUT_REQUEST_TIMEOUT": "30s"}, nil, "CALLOUT_REQUEST_TIMEOUT"},
		{"jwks refresh too short", map[string]string{"JWKS_REFRESH_INTERVAL": "5s"}, nil, "JWKS_REFRESH_INTERVAL"},
		{"jwks url", map[string]string{"JWKS_URL": "not a url"}, nil, "JWKS_URL"},
		{"source pinning without bound objects", map[string]string{"BIND_SOURCE_IP": "true", "VERIFY_BOUND_OBJECTS": "false"}, nil, "BIND_SOURCE_IP"},
		{"bound objects not a boolean", map[string]string{"VERIFY_BOUND_OBJECTS": "sometimes"}, nil, "VERIFY_BOUND_OBJECTS"},
		{"bound objects set but empty", map[string]string{"VERIFY_BOUND_OBJECTS": ""}, nil, "VERIFY_BOUND_OBJECTS"},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL"},
		{"log format", map[string]string{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT"},
		{"http addr", map[string]string{"HTTP_ADDR": "8080"}, nil, "HTTP_ADDR"},
		{"default pub template", map[string]string{"DEFAULT_PUB_SUBJECTS": "{nope}.>"}, nil, "DEFAULT_PUB_SUBJECTS"},
		{"default sub subject", map[string]string{"DEFAULT_SUB_SUBJECTS": "a..b"}, nil, "DEFAULT_SUB_SUBJECTS"},
		{"annotation limit", map[string]string{"ANNOTATION_SUBJECT_LIMIT": "{namespace}.>,x.>.y"}, nil, "ANNOTATION_SUBJECT_LIMIT"},
		{"invisible character in a default", map[string]string{"DEFAULT_PUB_SUBJECTS": "{namespace}\u200d.>"}, nil, "DEFAULT_PUB_SUBJECTS: default publish subject \"{namespace}\\u200d.>\": invisible character U+200D"},
		{"bidi control in a default", map[string]string{"DEFAULT_SUB_SUBJECTS": "{namespace}.>,{inbox}.\u202e>"}, nil, "DEFAULT_SUB_SUBJECTS"},
		{"soft hyphen in the limit", map[string]string{"ANNOTATION_SUBJECT_LIMIT": "{namespace}.>,sha\u00adred.>"}, nil, "ANNOTATION_SUBJECT_LIMIT"},
		{"colliding default", map[string]string{"DEFAULT_PUB_SUBJECTS": "{namespace}-{serviceaccount}.>"}, nil,
			`DEFAULT_PUB_SUBJECTS: default publish subject "{namespace}-{serviceaccount}.>" renders "a-c-e.>" both for serviceaccount a/c-e and for serviceaccount a-c/e`},
		{"limit reaching another namespace", map[string]string{"ANNOTATION_SUBJECT_LIMIT": "{namespace}-shared.>"}, nil,
			`DEFAULT_PUB_SUBJECTS and ANNOTATION_SUBJECT_LIMIT: DEFAULT_PUB_SUBJECTS "{namespace}.>" for namespace a-shared ("a-shared.>") overlaps ANNOTATION_SUBJECT_LIMIT "{namespace}-shared.>" for namespace a ("a-shared.>")`},
		{"zero annotation entries", map[string]string{"ANNOTATION_MAX_ENTRIES": "0"}, nil, "ANNOTATION_MAX_ENTRIES"},
		{"too many annotation entries", map[string]string{"ANNOTATION_MAX_ENTRIES": "100000"}, nil, "ANNOTATION_MAX_ENTRIES"},
		{"annotation entries not a number", map[string]string{"ANNOTATION_MAX_ENTRIES": "lots"}, nil, "ANNOTATION_MAX_ENTRIES"},
		{"annotation bytes below one subject", map[string]string{"ANNOTATION_MAX_BYTES": "511"}, nil, "ANNOTATION_MAX_BYTES"},
		{"annotation bytes beyond Kubernetes' limit", nil, []string{"--annotation-max-bytes=262145"}, "ANNOTATION_MAX_BYTES"},
		{"annotation bytes zero", map[string]string{"ANNOTATION_MAX_BYTES": "0"}, nil, "ANNOTATION_MAX_BYTES"},
		{"tls ca missing", map[string]string{"NATS_TLS_CA_FILE": "/nonexistent/ca.pem"}, nil, "NATS_TLS_CA_FILE"},
		{"tls cert without key", map[string]string{"NATS_TLS_CERT_FILE": "/nonexistent/tls.crt"}, nil, "NATS_TLS_KEY_FILE"},
		{"flag overrides a good env with a bad value", nil, []string{"--nats-account", "SYS"}, "NATS_ACCOUNT"},
		{"bad mode", map[string]string{"NATS_MODE": "cluster"}, nil, "NATS_MODE"},
		{"operator files in server-config mode", map[string]string{"NATS_TARGET_ACCOUNT_JWT_FILE": "/a.jwt"}, nil, "NATS_TARGET_ACCOUNT_JWT_FILE"},
		{"unexpected argument", nil, []string{"extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := maps.Clone(validEnv)
			for k, v := range tt.env {
				if v == "-" {
					delete(env, k)
				} else {
					env[k] = v
				}
			}
			_, err := ParseServe(tt.args, lookupIn(env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one naming %s", err, tt.want)
			}
		})
	}

	// user:password in the URL replaces the creds file.
	env := map[string]string{"NATS_SIGNING_KEY_FILE": "/k", "NATS_ACCOUNT": "APP", "NATS_URL": "nats://svc:pw@127.0.0.1:4222"}
	if _, err := ParseServe(nil, lookupIn(env), io.Discard); err != nil {
		t.Errorf("NATS_URL with user:password and no NATS_CREDS_FILE: %v", err)
	}
}

// TestSharedSettings checks that serve, explain and dev take a setting they share from the same
// declaration: same flag, same default, same help.
func TestSharedSettings(t *testing.T) {
	var s Serve
	var e Explain
	serve, expl := ServeTable(&s, false), ExplainTable(&e, false)
	for _, es := range expl.Settings {
		if es.Env == "" {
			continue
		}
		ss := serve.Lookup(es.Env)
		if ss == nil {
			t.Errorf("explain reads %s, which serve does not have", es.Env)
			continue
		}
		if ss.Flag != es.Flag || ss.Default != es.Default || ss.Help != es.Help {
			t.Errorf("%s: serve %+v, explain %+v", es.Env, *ss, *es)
		}
	}
}

// TestFlagNames checks the naming rule: a setting's flag is its environment variable in
// lower-case kebab form (older names stay as aliases).
func TestFlagNames(t *testing.T) {
	var s Serve
	for _, st := range ServeTable(&s, false).Settings {
		if st.Env == "" {
			continue
		}
		if want := strings.ReplaceAll(strings.ToLower(st.Env), "_", "-"); st.Flag != want {
			t.Errorf("%s: flag --%s, want --%s", st.Env, st.Flag, want)
		}
	}
}

func TestServeDefaults(t *testing.T) {
	c := ServeDefaults()
	if c.NATSURL != "nats://127.0.0.1:4222" || c.Audience != "nats" || c.Policy.DefaultPub == "" || c.Log.Format != "json" {
		t.Errorf("ServeDefaults() = %+v", c)
	}
}

func TestHelp(t *testing.T) {
	var b bytes.Buffer
	PrintHelp(&b)
	for _, want := range []string{"serve", "dev", "explain", "init", "version", "help", "--nats-url", "NATS_URL", "--callout-workers, --workers"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, b.String())
		}
	}
}

func TestCommand(t *testing.T) {
	for _, tt := range []struct {
		args []string
		cmd  string
		rest int
	}{
		{nil, "serve", 0},
		{[]string{"--nats-url", "x"}, "serve", 2},
		{[]string{"dev", "--check"}, "dev", 1},
		{[]string{"--help"}, "help", 0},
		{[]string{"-h"}, "help", 0},
		{[]string{"help"}, "help", 0},
		{[]string{"--version"}, "version", 0},
	} {
		cmd, rest := Command(tt.args)
		if cmd != tt.cmd || len(rest) != tt.rest {
			t.Errorf("Command(%q) = %q, %q; want %q with %d args", tt.args, cmd, rest, tt.cmd, tt.rest)
		}
	}
}
