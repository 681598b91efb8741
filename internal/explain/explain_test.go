package explain_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/explain"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
)

// manifest is the example ServiceAccounts dev mode serves.
var manifest = filepath.Join("..", "..", "examples", "serviceaccounts.yaml")

// runExplain runs explain as main does: settings from args and the environment, then Run.
func runExplain(lookup func(string) (string, bool), args ...string) (string, error) {
	c, err := settings.ParseExplain(args, lookup, io.Discard)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	err = explain.Run(context.Background(), c, &out)
	return out.String(), err
}

func TestExplain(t *testing.T) {
	env := func(kv map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
	}
	run := func(t *testing.T, vars map[string]string, args ...string) (string, error) {
		t.Helper()
		return runExplain(env(vars), append([]string{"--manifest", manifest}, args...)...)
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
		"sidecar RBAC  serviceaccounts: get, list, watch (all namespaces)\n",
		"pods: get, list, watch (all namespaces); nodes: get (VERIFY_BOUND_OBJECTS)\n",
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

	// The RBAC follows the settings.
	out, err = run(t, map[string]string{"VERIFY_BOUND_OBJECTS": "false", "WATCH_NAMESPACES": "shop"}, "shop/orders")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "serviceaccounts: get, list, watch (namespaces shop)") || !strings.Contains(out, "pods, nodes: none (VERIFY_BOUND_OBJECTS=false") {
		t.Errorf("with VERIFY_BOUND_OBJECTS=false:\n%s", out)
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
	_, err = runExplain(env(nil), "--manifest", bad, "team/app")
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

func TestExplainAccount(t *testing.T) {
	env := func(kv map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
	}
	tenants := map[string]string{
		"NATS_ACCOUNT": "APP", "NATS_ALLOWED_ACCOUNTS": "TEAM_A",
		"ACCOUNT_DEFAULTS": `{"TEAM_A": {"pub": [">"]}}`,
	}
	for _, tc := range []struct {
		name  string
		vars  map[string]string
		args  []string
		wants []string
		err   string
	}{
		{"labels not read", map[string]string{"NATS_ACCOUNT": "APP"}, nil,
			[]string{"account    APP (NATS_ALLOWED_ACCOUNTS is empty: namespace labels are not read)"}, ""},
		{"manifest", tenants, nil, []string{"account    APP (unless namespace shop carries a nats.io/account label"}, ""},
		{"labelled", tenants, []string{"--account-label", "TEAM_A"},
			[]string{"account    TEAM_A (namespace shop label nats.io/account=TEAM_A)", "publish    allow  >  billing.charges.create\n"}, ""},
		{"not allowed", tenants, []string{"--account-label", "OTHER"}, nil, "refused (account_not_allowed)"},
		{"callout account", tenants, []string{"--account-label", "AUTH"}, nil, "refused (account_not_allowed)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"--manifest", manifest}, tc.args...), "shop/orders")
			out, err := runExplain(env(tc.vars), args...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.wants {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
