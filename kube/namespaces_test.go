package kube_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

func namespace(name string, labels map[string]string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}
}

// namespaceRevocations collects what a RevocationSink is told.
type namespaceRevocations struct {
	mu  sync.Mutex
	got []kube.Revocation
}

func (r *namespaceRevocations) sink(rv kube.Revocation) {
	r.mu.Lock()
	r.got = append(r.got, rv)
	r.mu.Unlock()
}

func (r *namespaceRevocations) list() []kube.Revocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]kube.Revocation(nil), r.got...)
}

func startNamespaces(t *testing.T, client *metadatafake.FakeMetadataClient, cfg kube.NamespaceConfig) *kube.NamespaceCache {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	c, err := kube.NewNamespaceCache(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Label("team-a"); !errors.Is(err, kube.ErrNotSynced) {
		t.Fatalf("Label before Run: got %v, want ErrNotSynced", err)
	}
	testsupport.RunUntilCleanup(t, c.Run)
	testsupport.WaitFor(t, "namespace informer sync", 10*time.Second, func() bool {
		return c.HasSynced() && testsupport.Metric(t, reg, "nats_callout_namespace_informer_synced") == 1
	})
	return c
}

func TestNamespaceCacheLabelsAndMoves(t *testing.T) {
	scheme := metadatafake.NewTestScheme()
	scheme.AddKnownTypeWithName(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, &metav1.PartialObjectMetadata{})
	client := metadatafake.NewSimpleMetadataClient(scheme,
		namespace("team-a", map[string]string{kube.LabelAccount: "TEAM_A", "other": "x"}),
		namespace("shared", nil),
	)
	var rev namespaceRevocations
	c := startNamespaces(t, client, kube.NamespaceConfig{DefaultAccount: "APP", OnRevocation: rev.sink})

	for _, tc := range []struct {
		ns, want string
		labelled bool
	}{{"team-a", "TEAM_A", true}, {"shared", "", false}} {
		got, ok, err := c.Label(tc.ns)
		if err != nil || got != tc.want || ok != tc.labelled {
			t.Errorf("Label(%s) = %q, %v, %v; want %q, %v, nil", tc.ns, got, ok, err, tc.want, tc.labelled)
		}
	}
	if _, _, err := c.Label("unknown"); !errors.Is(err, kube.ErrNotSynced) {
		t.Errorf("Label(unknown) after sync: got %v, want ErrNotSynced (never the default account)", err)
	}
	if got := c.LabelledAccounts(); len(got) != 1 || got[0] != "TEAM_A" {
		t.Errorf("LabelledAccounts = %v, want [TEAM_A]", got)
	}

	api := client.Resource(kube.NamespacesResource).(metadatafake.MetadataClient)
	update := func(ns *metav1.PartialObjectMetadata) {
		t.Helper()
		if _, err := api.UpdateFake(ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Neither an unrelated label nor a label naming the default account moves anything.
	update(namespace("team-a", map[string]string{kube.LabelAccount: "TEAM_A", "other": "y"}))
	update(namespace("shared", map[string]string{kube.LabelAccount: "APP"}))
	update(namespace("team-a", map[string]string{kube.LabelAccount: "TEAM_B"}))
	testsupport.WaitFor(t, "label change seen", 10*time.Second, func() bool {
		v, _, _ := c.Label("team-a")
		return v == "TEAM_B"
	})
	testsupport.WaitFor(t, "revocation", 10*time.Second, func() bool { return len(rev.list()) > 0 })
	got := rev.list()
	want := kube.Revocation{Reason: kube.RevokeAccountMoved, Namespace: "team-a", Account: "TEAM_B"}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("revocations = %+v, want only %+v", got, want)
	}
	if !got[0].Matches(kube.Identity{Namespace: "team-a", Name: "any", UID: "u"}) || got[0].Matches(kube.Identity{Namespace: "team-b", Name: "any"}) {
		t.Errorf("%+v does not match exactly the namespace's connections", got[0])
	}
	// Removing the label moves the namespace back to the default account.
	update(namespace("team-a", nil))
	testsupport.WaitFor(t, "second revocation", 10*time.Second, func() bool { return len(rev.list()) == 2 })
}

// labels is a fixed AccountLabels.
type labels map[string]string

func (l labels) Label(ns string) (string, bool, error) {
	if ns == "unseen" {
		return "", false, kube.ErrNotSynced
	}
	v, ok := l[ns]
	return v, ok, nil
}

func TestAccountsChoose(t *testing.T) {
	a, err := kube.NewAccounts(kube.AccountsConfig{
		Default: "APP", Allowed: []string{"TEAM_A", "TEAM_B"}, Reserved: []string{"AUTH", "SYS"},
		Labels: labels{"a": "TEAM_A", "b": "TEAM_B", "app": "APP", "x": "OTHER", "auth": "AUTH", "sys": "SYS", "empty": ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ns, want string
		err      error
	}{
		{"a", "TEAM_A", nil}, {"b", "TEAM_B", nil}, {"app", "APP", nil}, {"plain", "APP", nil},
		{"x", "", kube.ErrAccountNotAllowed}, {"auth", "", kube.ErrAccountNotAllowed},
		{"sys", "", kube.ErrAccountNotAllowed}, {"empty", "", kube.ErrAccountNotAllowed},
		{"unseen", "", kube.ErrNotSynced},
	} {
		got, err := a.Choose(tc.ns)
		if got.Account != tc.want || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("Choose(%s) = %+v, %v; want %s, %v", tc.ns, got, err, tc.want, tc.err)
		}
		if err == nil && got.Why == "" {
			t.Errorf("Choose(%s): no reason given", tc.ns)
		}
	}
	for _, cfg := range []kube.AccountsConfig{
		{Default: "APP", Allowed: []string{"SYS"}, Reserved: []string{"AUTH", "SYS"}},
		{},
	} {
		if _, err := kube.NewAccounts(cfg); err == nil {
			t.Errorf("NewAccounts(%+v) accepted", cfg)
		}
	}
}

func TestStoreAccounts(t *testing.T) {
	cluster := memoryCluster(t,
		serviceAccount("team-a", "app", "uid-a", map[string]string{kube.AnnotationAllowedPub: "x.>"}),
		// An annotation naming an account is not read: only the Namespace's label chooses.
		serviceAccount("shared", "app", "uid-s", map[string]string{kube.AnnotationAllowedPub: "x.>", kube.LabelAccount: "TEAM_A"}),
		serviceAccount("rogue", "app", "uid-r", nil),
		serviceAccount("unseen", "app", "uid-u", nil),
	)
	ls := labels{"team-a": "TEAM_A", "rogue": "ELSEWHERE"}
	accounts, err := kube.NewAccounts(kube.AccountsConfig{Default: "APP", Allowed: []string{"TEAM_A"}, Reserved: []string{"AUTH"}, Labels: ls})
	if err != nil {
		t.Fatal(err)
	}
	base := kube.PolicyDefaults{AnnotationLimit: []string{"{namespace}.>"}}
	byAccount, err := kube.ParseAccountDefaults(`{"TEAM_A": {"pub": [">"], "annotation_subject_limit": [">"]}}`, base)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := startStore(t, cluster, kube.StoreConfig{Defaults: base, Accounts: accounts, AccountDefaults: byAccount})

	p, err := s.Policy(kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-a"})
	if err != nil || p.Account != "TEAM_A" || p.AccountWhy == "" {
		t.Fatalf("team-a: %+v, %v", p, err)
	}
	if want := []string{">", "x.>"}; !equal(p.Permissions.PubAllow, want) || len(p.Warnings) != 0 {
		t.Errorf("team-a publish = %v (warnings %v), want %v: the account's own defaults and limit", p.Permissions.PubAllow, p.Warnings, want)
	}
	if want := []string{"team-a.>", "_INBOX_team-a_app.>"}; !equal(p.Permissions.SubAllow, want) {
		t.Errorf("team-a subscribe = %v, want the service-wide %v (the private inbox stays)", p.Permissions.SubAllow, want)
	}
	p, err = s.Policy(kube.Identity{Namespace: "shared", Name: "app", UID: "uid-s"})
	if err != nil || p.Account != "APP" || !equal(p.Permissions.PubAllow, []string{"shared.>"}) || len(p.Warnings) != 2 ||
		!strings.Contains(strings.Join(p.Warnings, "\n"), `unknown annotation "nats.io/account" ignored`) {
		t.Errorf("shared: %+v, %v; want APP, x.> dropped by the service-wide limit and the account annotation ignored", p, err)
	}
	if _, err := s.Policy(kube.Identity{Namespace: "rogue", Name: "app", UID: "uid-r"}); !errors.Is(err, kube.ErrAccountNotAllowed) {
		t.Errorf("rogue: %v, want ErrAccountNotAllowed", err)
	}
	// A namespace the namespace cache has not seen is not ready, never the default account.
	if p, err := s.Policy(kube.Identity{Namespace: "unseen", Name: "app", UID: "uid-u"}); !errors.Is(err, kube.ErrNotSynced) {
		t.Errorf("unseen namespace: %+v, %v; want ErrNotSynced", p, err)
	}
	// The remembered policy is per account: a namespace moved gets its new account's defaults.
	ls["team-a"] = "APP"
	p, err = s.Policy(kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-a"})
	if err != nil || p.Account != "APP" || !equal(p.Permissions.PubAllow, []string{"team-a.>"}) {
		t.Errorf("team-a after the move: %+v, %v", p, err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseAccountDefaults(t *testing.T) {
	base := kube.PolicyDefaults{Pub: []string{"{namespace}.>"}, Sub: []string{"{namespace}.>", "{inbox}.>"}}
	got, err := kube.ParseAccountDefaults(` {"A": {"sub": [">"]}, "B": {}} `, base)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(got["A"].Pub, base.Pub) || !equal(got["A"].Sub, []string{">"}) || !equal(got["B"].Sub, base.Sub) {
		t.Errorf("got %+v", got)
	}
	if got, err := kube.ParseAccountDefaults("  ", base); got != nil || err != nil {
		t.Errorf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{
		`[]`, `null`, `{"A": {"pub": ["a..b"]}}`, `{"A": {"publish": [">"]}}`, `{"": {}}`, `{" A": {}}`,
		`{"A": {}} {}`, `{"A": {"sub": [""]}}`, `{"A": {"pub": ["{namespace}-{serviceaccount}.>"]}}`, `{"A": {"pub": ["{nope}"]}}`,
	} {
		if _, err := kube.ParseAccountDefaults(bad, base); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func FuzzParseAccountDefaults(f *testing.F) {
	for _, s := range []string{`{"A": {"pub": [">"], "sub": ["{inbox}.>"], "annotation_subject_limit": ["{namespace}.>"]}}`, `{}`, `{"A":{}}`, `[`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		got, err := kube.ParseAccountDefaults(text, kube.PolicyDefaults{})
		if err != nil {
			return
		}
		for acc, d := range got {
			if acc == "" {
				t.Fatal("empty account name accepted")
			}
			if err := d.Validate(); err != nil {
				t.Fatalf("account %s: accepted defaults that do not validate: %v", acc, err)
			}
			if _, err := kube.ParsePolicy(d, "ns", "sa", nil); err != nil {
				t.Fatalf("account %s: accepted defaults that cannot render: %v", acc, err)
			}
		}
	})
}

// With WATCH_NAMESPACES the cache lists and watches each Namespace by name, so that RBAC can
// name them; it learns nothing of the others.
func TestNamespaceCacheWatchesOnlyNamed(t *testing.T) {
	scheme := metadatafake.NewTestScheme()
	scheme.AddKnownTypeWithName(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, &metav1.PartialObjectMetadata{})
	client := metadatafake.NewSimpleMetadataClient(scheme, namespace("team-a", map[string]string{kube.LabelAccount: "TEAM_A"}), namespace("other", nil))
	c := startNamespaces(t, client, kube.NamespaceConfig{Namespaces: []string{"team-a", "team-b", "team-a"}, DefaultAccount: "APP"})
	got := map[string]bool{}
	for _, a := range client.Actions() {
		if l, ok := a.(clienttesting.ListAction); ok && l.GetResource() == kube.NamespacesResource {
			got[l.GetListRestrictions().Fields.String()] = true
		}
	}
	for _, want := range []string{"metadata.name=team-a", "metadata.name=team-b"} {
		if !got[want] {
			t.Errorf("no list of namespaces with field selector %s; lists: %v", want, got)
		}
	}
	if len(got) != 2 {
		t.Errorf("lists %v, want one per named namespace and none of all namespaces", got)
	}
	if v, ok, err := c.Label("team-a"); err != nil || !ok || v != "TEAM_A" {
		t.Errorf("Label(team-a) = %q, %v, %v", v, ok, err)
	}
}
