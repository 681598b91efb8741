package kube_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

func serviceAccount(ns, name, uid string, annotations map[string]string) *kube.ServiceAccount {
	return &kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: types.UID(uid), Annotations: annotations,
	}}
}

// memoryCluster returns a MemoryCluster holding sas.
func memoryCluster(t *testing.T, sas ...*kube.ServiceAccount) *kubefake.MemoryCluster {
	t.Helper()
	m, err := kubefake.NewMemoryCluster(sas...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close) // after the stores, whose cleanups are registered later
	return m
}

// startStore runs a Store over the cluster until the test ends and waits for its cache to sync.
func startStore(t *testing.T, cluster *kubefake.MemoryCluster, cfg kube.StoreConfig) (*kube.Store, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s, err := kube.NewStore(cluster.Client(), cfg)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	testsupport.RunUntilCleanup(t, s.Run)
	testsupport.WaitFor(t, "informer sync", 10*time.Second, s.HasSynced)
	testsupport.WaitFor(t, "synced gauge", 10*time.Second, func() bool {
		return metricValue(t, reg, "nats_callout_informer_synced") == 1
	})
	return s, reg
}

func TestStorePolicy(t *testing.T) {
	deleting := serviceAccount("team-a", "leaving", "uid-leaving", nil)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	deleting.Finalizers = []string{"example.com/hold"}
	client := memoryCluster(t,
		serviceAccount("team-a", "app", "uid-app", map[string]string{kube.AnnotationAllowedPub: "orders.>"}),
		serviceAccount("team-a", "broken", "uid-broken", map[string]string{kube.AnnotationDeniedSub: "a..b"}),
		deleting,
		serviceAccount("team-b", "app", "uid-b-app", nil),
	)
	s, _ := startStore(t, client, kube.StoreConfig{})

	tests := []struct {
		name     string
		id       kube.Identity
		wantErr  error
		wantPubs []string
	}{
		{"found", kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-app"}, nil, []string{"team-a.>", "orders.>"}},
		{"same name in another namespace", kube.Identity{Namespace: "team-b", Name: "app", UID: "uid-b-app"}, nil, []string{"team-b.>"}},
		{"missing", kube.Identity{Namespace: "team-a", Name: "ghost", UID: "uid-ghost"}, kube.ErrServiceAccountNotFound, nil},
		{"missing namespace", kube.Identity{Namespace: "team-z", Name: "app", UID: "uid-app"}, kube.ErrServiceAccountNotFound, nil},
		{"being deleted", kube.Identity{Namespace: "team-a", Name: "leaving", UID: "uid-leaving"}, kube.ErrServiceAccountDeleting, nil},
		{"uid mismatch", kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-old"}, kube.ErrUIDMismatch, nil},
		{"uid empty", kube.Identity{Namespace: "team-a", Name: "app"}, kube.ErrUIDMismatch, nil},
		{"another namespace's uid", kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-b-app"}, kube.ErrUIDMismatch, nil},
		{"invalid deny annotation", kube.Identity{Namespace: "team-a", Name: "broken", UID: "uid-broken"}, kube.ErrInvalidPolicy, nil},
		{"empty identity", kube.Identity{}, kube.ErrServiceAccountNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := s.Policy(tt.id)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Policy error = %v, want %v", err, tt.wantErr)
			}
			if got := p.Permissions.PubAllow; !slices.Equal(got, tt.wantPubs) {
				t.Errorf("PubAllow = %q, want %q", got, tt.wantPubs)
			}
		})
	}
}

func TestStoreFollowsChanges(t *testing.T) {
	ctx := context.Background()
	client := memoryCluster(t, serviceAccount("team-a", "app", "uid-1", nil))
	s, reg := startStore(t, client, kube.StoreConfig{})
	id := kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-1"}
	policyHas := func(id kube.Identity, subject string) func() bool {
		return func() bool {
			p, err := s.Policy(id)
			return err == nil && slices.Contains(p.Permissions.SubAllow, subject)
		}
	}
	policyErr := func(id kube.Identity, want error) func() bool {
		return func() bool {
			_, err := s.Policy(id)
			return errors.Is(err, want)
		}
	}
	if got := metricValue(t, reg, "nats_callout_serviceaccounts"); got != 1 {
		t.Errorf("nats_callout_serviceaccounts = %v, want 1", got)
	}

	// An annotation update reaches the next Policy call.
	sa, err := client.Get(ctx, "team-a", "app")
	if err != nil {
		t.Fatal(err)
	}
	sa = sa.DeepCopy()
	sa.Annotations = map[string]string{kube.AnnotationAllowedSub: "events.>"}
	if _, err := client.Update(ctx, sa); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "annotation update", 10*time.Second, policyHas(id, "events.>"))

	// Deletion starts: refused while the finalizer holds it.
	sa = sa.DeepCopy()
	sa.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	sa.Finalizers = []string{"example.com/hold"}
	if _, err := client.Update(ctx, sa); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "deletion timestamp", 10*time.Second, policyErr(id, kube.ErrServiceAccountDeleting))

	// Deleted: not found, and the gauge follows.
	if err := client.Delete(ctx, "team-a", "app"); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "deletion", 10*time.Second, policyErr(id, kube.ErrServiceAccountNotFound))
	if got := metricValue(t, reg, "nats_callout_serviceaccounts"); got != 0 {
		t.Errorf("nats_callout_serviceaccounts after delete = %v, want 0", got)
	}

	// Recreated under the same name: tokens of the old one are refused, new ones accepted.
	if _, err := client.Create(ctx, serviceAccount("team-a", "app", "uid-2", nil)); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "recreation", 10*time.Second, policyErr(id, kube.ErrUIDMismatch))
	if _, err := s.Policy(kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-2"}); err != nil {
		t.Errorf("Policy for the recreated ServiceAccount: %v", err)
	}
	if got := metricValue(t, reg, "nats_callout_serviceaccounts"); got != 1 {
		t.Errorf("nats_callout_serviceaccounts after recreate = %v, want 1", got)
	}
}

// TestStorePolicyMemo checks that annotations are parsed once per version of a ServiceAccount:
// the same policy (not a copy) until the object changes, a new one after, nothing remembered
// for a deleted one; and that the uid and deletion checks still run on every call.
func TestStorePolicyMemo(t *testing.T) {
	ctx := context.Background()
	client := memoryCluster(t,
		serviceAccount("team-a", "app", "uid-1", map[string]string{kube.AnnotationAllowedPub: "orders.>"}),
		serviceAccount("team-a", "broken", "uid-broken", map[string]string{kube.AnnotationDeniedPub: "a..b"}),
	)
	s, _ := startStore(t, client, kube.StoreConfig{})
	id := kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-1"}
	same := func(a, b kube.Policy) bool {
		return len(a.Permissions.PubAllow) > 0 && len(b.Permissions.PubAllow) > 0 &&
			&a.Permissions.PubAllow[0] == &b.Permissions.PubAllow[0]
	}

	if n := s.MemoisedPolicies(); n != 0 {
		t.Errorf("%d policies remembered before any login, want 0", n)
	}
	first, err := s.Policy(id)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Policy(id)
	if err != nil {
		t.Fatal(err)
	}
	if !same(first, second) {
		t.Error("second login parsed the annotations again, want the remembered policy")
	}
	if n := s.MemoisedPolicies(); n != 1 {
		t.Errorf("%d policies remembered, want 1", n)
	}
	// The uid check still runs: a token for an older ServiceAccount of the same name is refused.
	if _, err := s.Policy(kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-0"}); !errors.Is(err, kube.ErrUIDMismatch) {
		t.Errorf("other uid: %v, want %v", err, kube.ErrUIDMismatch)
	}
	// A refusal is remembered too, and stays a refusal.
	for range 2 {
		if _, err := s.Policy(kube.Identity{Namespace: "team-a", Name: "broken", UID: "uid-broken"}); !errors.Is(err, kube.ErrInvalidPolicy) {
			t.Errorf("invalid deny annotation: %v, want %v", err, kube.ErrInvalidPolicy)
		}
	}
	if n := s.MemoisedPolicies(); n != 2 {
		t.Errorf("%d policies remembered, want 2", n)
	}

	// An update: the next login sees the new annotations, and the old version is forgotten.
	sa, err := client.Get(ctx, "team-a", "app")
	if err != nil {
		t.Fatal(err)
	}
	sa = sa.DeepCopy()
	sa.Annotations = map[string]string{kube.AnnotationAllowedPub: "invoices.>"}
	if _, err := client.Update(ctx, sa); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "annotation update", 10*time.Second, func() bool {
		p, err := s.Policy(id)
		return err == nil && slices.Contains(p.Permissions.PubAllow, "invoices.>")
	})
	updated, err := s.Policy(id)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(updated.Permissions.PubAllow, "orders.>") || same(updated, first) {
		t.Errorf("after the update PubAllow = %q, want the new annotation's only", updated.Permissions.PubAllow)
	}
	if again, _ := s.Policy(id); !same(updated, again) {
		t.Error("the updated version is parsed on every login, want once")
	}
	testsupport.WaitFor(t, "the old version forgotten", 10*time.Second, func() bool { return s.MemoisedPolicies() == 2 })

	// Deletion starts: refused although a policy is remembered for the version before.
	sa, err = client.Get(ctx, "team-a", "app")
	if err != nil {
		t.Fatal(err)
	}
	sa = sa.DeepCopy()
	sa.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	sa.Finalizers = []string{"example.com/hold"}
	if _, err := client.Update(ctx, sa); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "deletion timestamp", 10*time.Second, func() bool {
		_, err := s.Policy(id)
		return errors.Is(err, kube.ErrServiceAccountDeleting)
	})

	// Deleted: forgotten. Recreated under the same name: a new uid, parsed afresh.
	if err := client.Delete(ctx, "team-a", "app"); err != nil {
		t.Fatal(err)
	}
	if err := client.Delete(ctx, "team-a", "broken"); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "deleted ServiceAccounts forgotten", 10*time.Second, func() bool { return s.MemoisedPolicies() == 0 })
	if _, err := client.Create(ctx, serviceAccount("team-a", "app", "uid-2", nil)); err != nil {
		t.Fatal(err)
	}
	id.UID = "uid-2"
	testsupport.WaitFor(t, "recreation", 10*time.Second, func() bool {
		p, err := s.Policy(id)
		return err == nil && slices.Equal(p.Permissions.PubAllow, []string{"team-a.>"})
	})
	if n := s.MemoisedPolicies(); n != 1 {
		t.Errorf("%d policies remembered, want 1", n)
	}
}

func TestStoreNamespaceLimited(t *testing.T) {
	ctx := context.Background()
	client := memoryCluster(t,
		serviceAccount("team-a", "app", "uid-a", nil),
		serviceAccount("team-b", "app", "uid-b", nil),
		serviceAccount("team-c", "app", "uid-c", nil),
	)
	s, reg := startStore(t, client, kube.StoreConfig{Namespaces: []string{"team-c", "team-a", "team-a"}})

	if _, err := s.Policy(kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-a"}); err != nil {
		t.Errorf("Policy in a watched namespace: %v", err)
	}
	if _, err := s.Policy(kube.Identity{Namespace: "team-c", Name: "app", UID: "uid-c"}); err != nil {
		t.Errorf("Policy in a watched namespace: %v", err)
	}
	_, err := s.Policy(kube.Identity{Namespace: "team-b", Name: "app", UID: "uid-b"})
	if !errors.Is(err, kube.ErrServiceAccountNotFound) || !strings.Contains(err.Error(), "not watched") {
		t.Errorf("Policy in an unwatched namespace: %v, want %v (not watched)", err, kube.ErrServiceAccountNotFound)
	}

	// Changes elsewhere are not even seen; changes in a watched namespace are.
	if _, err := client.Create(ctx, serviceAccount("team-b", "new", "uid-bn", nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Create(ctx, serviceAccount("team-a", "new", "uid-an", nil)); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "new ServiceAccount in team-a", 10*time.Second, func() bool {
		_, err := s.Policy(kube.Identity{Namespace: "team-a", Name: "new", UID: "uid-an"})
		return err == nil
	})
	if got := metricValue(t, reg, "nats_callout_serviceaccounts"); got != 3 {
		t.Errorf("nats_callout_serviceaccounts = %v, want 3 (team-a and team-c only)", got)
	}
}

func TestStoreNotSyncedAndLifecycle(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := kube.NewStore(memoryCluster(t, serviceAccount("team-a", "app", "uid-a", nil)).Client(), kube.StoreConfig{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if s.HasSynced() {
		t.Error("HasSynced before Run")
	}
	if _, err := s.Policy(kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-a"}); !errors.Is(err, kube.ErrNotSynced) {
		t.Errorf("Policy before sync: %v, want %v", err, kube.ErrNotSynced)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testsupport.WaitFor(t, "informer sync", 10*time.Second, s.HasSynced)
	if err := s.Run(ctx); err == nil {
		t.Error("second Run succeeded, want an error")
	}
	if _, err := s.Policy(kube.Identity{Namespace: "team-a", Name: "app", UID: "uid-a"}); err != nil {
		t.Errorf("Policy after sync: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if got := metricValue(t, reg, "nats_callout_informer_synced"); got != 0 {
		t.Errorf("nats_callout_informer_synced after Run = %v, want 0", got)
	}
}

func TestNewStoreConfig(t *testing.T) {
	client := memoryCluster(t).Client()
	tests := []struct {
		name    string
		client  metadata.Interface
		cfg     kube.StoreConfig
		wantErr string
	}{
		{"no client", nil, kube.StoreConfig{}, "client is required"},
		{"bad namespace", client, kube.StoreConfig{Namespaces: []string{"Team_A"}}, `namespace "Team_A"`},
		{"empty namespace", client, kube.StoreConfig{Namespaces: []string{""}}, `namespace ""`},
		{"bad template", client, kube.StoreConfig{Defaults: kube.PolicyDefaults{Pub: []string{"{namespace}..x"}}}, "default publish subject"},
		{"negative resync", client, kube.StoreConfig{ResyncPeriod: -time.Second}, "negative resync"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := kube.NewStore(tt.client, tt.cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewStore error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// BenchmarkStore reports what the informer cache costs per ServiceAccount (heap after sync,
// annotations as in the README's example), the time of one lookup with its policy (each of the
// 10,000 ServiceAccounts in turn: parsed on its first login, remembered after), and what a
// remembered policy costs (the memo's own estimate, which it bounds).
func BenchmarkStore(b *testing.B) {
	const n = 10000
	sas := make([]*kube.ServiceAccount, n)
	for i := range sas {
		sas[i] = serviceAccount(fmt.Sprintf("team-%d", i%100), fmt.Sprintf("app-%d", i), fmt.Sprintf("uid-%d", i), map[string]string{
			kube.AnnotationAllowedPub: "events.orders.>, audit.shop",
			kube.AnnotationAllowedSub: "commands.orders.*",
			kube.AnnotationDeniedPub:  "shop.internal.>",
		})
		sas[i].Labels = map[string]string{"app.kubernetes.io/name": "orders"}
	}
	m, err := kubefake.NewMemoryCluster(sas...)
	if err != nil {
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := kube.NewStore(m.Client(), kube.StoreConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	syncCtx, syncDone := context.WithTimeout(ctx, time.Minute)
	defer syncDone()
	if !cache.WaitForCacheSync(syncCtx.Done(), s.HasSynced) {
		b.Fatal("the store did not sync within a minute")
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perSA := float64(after.HeapAlloc-before.HeapAlloc) / n

	ids := make([]kube.Identity, n)
	for i := range ids {
		ids[i] = kube.Identity{Namespace: sas[i].Namespace, Name: sas[i].Name, UID: string(sas[i].UID)}
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Policy(ids[i%n]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(perSA, "heap-B/serviceaccount") // after the loop: b.Loop resets reported metrics
	if k := s.MemoisedPolicies(); k > 0 {
		b.ReportMetric(float64(s.MemoisedBytes())/float64(k), "memo-B/policy")
	}
}

// BenchmarkStorePolicy is one login's lookup and policy (Store.Policy) for a ServiceAccount
// with a few annotation subjects (normal) and one with all four annotations at the caps
// (1,000 entries each, 16 KiB of subjects granted), with annotations parsed on every login
// (as before the policy memo) and remembered per version.
func BenchmarkStorePolicy(b *testing.B) {
	long := func(kind string) string {
		e := make([]string, kube.DefaultAnnotationMaxEntries)
		for i := range e {
			e[i] = fmt.Sprintf("shop.%s.%s.%05d", kind, strings.Repeat("x", 40), i)
		}
		return strings.Join(e, ",")
	}
	short := func(kind string) string {
		e := make([]string, kube.DefaultAnnotationMaxEntries)
		for i := range e {
			e[i] = fmt.Sprintf("%s.%05d", kind, i)
		}
		return strings.Join(e, ",")
	}
	for _, c := range []struct {
		name        string
		annotations map[string]string
	}{
		{"normal", map[string]string{
			kube.AnnotationAllowedPub: "events.orders.>, audit.shop",
			kube.AnnotationAllowedSub: "commands.orders.*",
			kube.AnnotationDeniedPub:  "shop.internal.>",
		}},
		{"at-the-caps", map[string]string{
			kube.AnnotationAllowedPub: long("pub"), kube.AnnotationAllowedSub: long("sub"),
			kube.AnnotationDeniedPub: short("np"), kube.AnnotationDeniedSub: short("ns"),
		}},
	} {
		for _, memo := range []bool{false, true} {
			name := c.name + "/parse-every-login"
			if memo {
				name = c.name + "/memoised"
			}
			b.Run(name, func(b *testing.B) {
				m, err := kubefake.NewMemoryCluster(serviceAccount("shop", "api", "uid-api", c.annotations))
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				s, err := kube.NewStore(m.Client(), kube.StoreConfig{})
				if err != nil {
					b.Fatal(err)
				}
				if !memo {
					s.ParseEveryLogin()
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go func() { _ = s.Run(ctx) }()
				if !cache.WaitForCacheSync(ctx.Done(), s.HasSynced) {
					b.Fatal("not synced")
				}
				id := kube.Identity{Namespace: "shop", Name: "api", UID: "uid-api"}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.Policy(id); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestStoreKeepsWhatDecisionsRead checks the cache's trimmed entries through the store: a
// ServiceAccount's non-nats.io annotations and labels change nothing a decision sees, and its
// nats.io annotations all reach the policy (unknown ones as warnings).
func TestStoreKeepsWhatDecisionsRead(t *testing.T) {
	sa := serviceAccount("shop", "api", "uid-1", map[string]string{
		kube.AnnotationAllowedPub: "orders.new",
		"nats.io/colour":          "blue",
		"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 10000),
	})
	sa.Labels = map[string]string{"team": "a"}
	cluster := memoryCluster(t, sa)
	s, _ := startStore(t, cluster, kube.StoreConfig{})
	p, err := s.Policy(kube.Identity{Namespace: "shop", Name: "api", UID: "uid-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p.Permissions.PubAllow, "orders.new") {
		t.Errorf("pub allow %v lacks the annotation's orders.new", p.Permissions.PubAllow)
	}
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "nats.io/colour") {
		t.Errorf("warnings %q, want one for the unknown nats.io/colour", p.Warnings)
	}
}
