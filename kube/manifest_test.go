package kube

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseServiceAccounts(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		want     []string // namespace/name uid annotations
	}{
		{name: "empty", manifest: "", want: nil},
		{name: "only comments and separators", manifest: "# nothing\n---\n---\n# still nothing\n", want: nil},
		{
			name: "documents, default namespace, uid kept",
			manifest: `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: orders
  namespace: shop
  annotations:
    nats.io/allowed-pub-subjects: "billing.charges.create"
---
# a comment between documents
apiVersion: v1
kind: ServiceAccount
metadata:
  name: builder.v2
  uid: 7d3c2a39-0000-4000-8000-000000000001
`,
			want: []string{
				"shop/orders  map[nats.io/allowed-pub-subjects:billing.charges.create]",
				"default/builder.v2 7d3c2a39-0000-4000-8000-000000000001 map[]",
			},
		},
		{
			name: "kubectl get -o yaml list, server fields dropped",
			manifest: `
apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata:
    name: app
    namespace: team-a
    uid: 11111111-2222-3333-4444-555555555555
    resourceVersion: "4711"
    creationTimestamp: "2026-11-28T10:00:00Z"
    annotations:
      nats.io/allow-responses: "false"
  secrets:
  - name: app-token
`,
			want: []string{"team-a/app 11111111-2222-3333-4444-555555555555 map[nats.io/allow-responses:false]"},
		},
		{
			name:     "JSON",
			manifest: `{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"app","namespace":"team-a"}}`,
			want:     []string{"team-a/app  map[]"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sas, err := ParseServiceAccounts([]byte(tt.manifest))
			if err != nil {
				t.Fatalf("ParseServiceAccounts: %v", err)
			}
			var got []string
			for _, sa := range sas {
				if sa.ResourceVersion != "" || !sa.CreationTimestamp.IsZero() {
					t.Errorf("%s/%s keeps server-side fields: %+v", sa.Namespace, sa.Name, sa)
				}
				got = append(got, fmt.Sprint(sa.Namespace+"/"+sa.Name, " ", sa.UID, " ", sa.Annotations))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// readExample reads the manifest dev mode serves by default.
func readExample(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", "serviceaccounts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseServiceAccountsErrors(t *testing.T) {
	const sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: team-a\n"
	tests := []struct {
		name, manifest, want string
	}{
		{"misspelt annotations", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n  annotation:\n    nats.io/allowed-pub-subjects: x\n", `document 1: error unmarshaling JSON: while decoding JSON: json: unknown field "annotation"`},
		{"other kind", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", "document 1: v1 ConfigMap: only v1 ServiceAccounts are read"},
		{"no kind", "metadata:\n  name: x\n", "document 1: no kind"},
		{"wrong apiVersion", "apiVersion: v2\nkind: ServiceAccount\nmetadata:\n  name: x\n", "document 1: v2 ServiceAccount: only v1"},
		{"no name", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  namespace: a\n", "document 1: serviceaccount a/: metadata.name is required"},
		{"bad name", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: Bad_Name\n", "document 1: serviceaccount default/Bad_Name: name:"},
		{"bad namespace", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  namespace: a.b\n", "document 1: serviceaccount a.b/x: namespace:"},
		{"duplicate", sa + "---\n" + sa, "document 2: serviceaccount team-a/app is already defined in document 1"},
		{"list with another kind", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata:\n    name: x\n", "document 1: item 0 is v1 Secret"},
		{"not YAML", "apiVersion: v1\nkind: [", "document 1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseServiceAccounts([]byte(tt.manifest))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error = %v, want prefix %q", err, tt.want)
			}
		})
	}
}

func TestParseServiceAccountsExample(t *testing.T) {
	data := readExample(t)
	sas, err := ParseServiceAccounts(data)
	if err != nil {
		t.Fatal(err)
	}
	namespaces := map[string]bool{}
	for _, sa := range sas {
		namespaces[sa.Namespace] = true
		p, err := ParsePolicy(DefaultPolicyDefaults(), sa.Namespace, sa.Name, sa.Annotations)
		if err != nil {
			t.Errorf("%s/%s: %v", sa.Namespace, sa.Name, err)
		}
		if len(p.Warnings) > 0 {
			t.Errorf("%s/%s: warnings %q", sa.Namespace, sa.Name, p.Warnings)
		}
	}
	if len(sas) < 3 || len(namespaces) != 2 {
		t.Errorf("example has %d ServiceAccounts in %d namespaces, want a few in two", len(sas), len(namespaces))
	}
}
