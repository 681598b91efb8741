package kube_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	metadatafake "k8s.io/client-go/metadata/fake"
	"k8s.io/client-go/rest"
	clienttesting "k8s.io/client-go/testing"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// metadataClient is client-go's fake metadata client holding objs (Secrets and nodes).
func metadataClient(objs ...runtime.Object) *metadatafake.FakeMetadataClient {
	scheme := runtime.NewScheme()
	for _, kind := range []string{"Secret", "Node"} {
		scheme.AddKnownTypeWithName(schema.GroupVersionKind{Version: "v1", Kind: kind}, &metav1.PartialObjectMetadata{})
		scheme.AddKnownTypeWithName(schema.GroupVersionKind{Version: "v1", Kind: kind + "List"}, &metav1.PartialObjectMetadataList{})
	}
	return metadatafake.NewSimpleMetadataClient(scheme, objs...)
}

func object(kind, ns, name, uid string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: typesUID(uid)},
	}
}

// boundObjects builds BoundObjects over a synced pod cache of cluster and a metadata client
// holding the Secrets and nodes, with a clock the test moves.
func boundObjects(t *testing.T, meta *metadatafake.FakeMetadataClient, now *time.Time) *kube.BoundObjects {
	t.Helper()
	cluster := memoryCluster(t)
	pods, _ := startPods(t, cluster, kube.PodCacheConfig{})
	b, err := kube.NewBoundObjects(kube.BoundConfig{Pods: pods, Client: meta, PodStatus: cluster, Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBoundSecretsAndNodes(t *testing.T) {
	ctx := context.Background()
	meta := metadataClient(
		object("Secret", "shop", "s1", "secret-uid"), object("Node", "", "n1", "node-uid"))
	now := time.Now()
	b := boundObjects(t, meta, &now)
	secret := func(name, uid string) kube.Identity {
		return kube.Identity{Namespace: "shop", Name: "app", SecretName: name, SecretUID: uid}
	}
	node := func(name, uid string) kube.Identity {
		return kube.Identity{Namespace: "shop", Name: "app", NodeName: name, NodeUID: uid}
	}
	tests := []struct {
		name string
		id   kube.Identity
		want error
	}{
		{"secret", secret("s1", "secret-uid"), nil},
		{"secret recreated", secret("s1", "old"), kube.ErrSecretUIDMismatch},
		{"secret gone", secret("s2", "x"), kube.ErrSecretNotFound},
		{"node", node("n1", "node-uid"), nil},
		{"node recreated", node("n1", "old"), kube.ErrNodeUIDMismatch},
		{"node gone", node("n2", "x"), kube.ErrNodeNotFound},
		// A pod-bound token carries its node too (Kubernetes 1.30+): the pod decides.
		{"pod-bound token with a node that is gone", kube.Identity{Namespace: "shop", PodName: "p", PodUID: "u", NodeName: "n2", NodeUID: "x"}, kube.ErrPodNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.CheckBound(ctx, tt.id)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("CheckBound = %v, want %v", err, tt.want)
			}
		})
	}

	// Remembered for the TTL: a deleted node is refused once the TTL has passed.
	gets := len(meta.Actions())
	if err := meta.Resource(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}).Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckBound(ctx, node("n1", "node-uid")); err != nil {
		t.Errorf("within the TTL: %v, want the remembered answer", err)
	}
	if got := len(meta.Actions()) - gets; got != 1 {
		t.Errorf("API calls within the TTL = %d, want 1 (the test's delete)", got)
	}
	now = now.Add(kube.DefaultBoundLookupTTL)
	if err := b.CheckBound(ctx, node("n1", "node-uid")); !errors.Is(err, kube.ErrNodeNotFound) {
		t.Errorf("after the TTL: %v, want %v", err, kube.ErrNodeNotFound)
	}
}

func TestBoundForbidden(t *testing.T) {
	meta := metadataClient(object("Secret", "shop", "s1", "secret-uid"))
	meta.PrependReactor("get", "secrets", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "s1", errors.New("RBAC"))
	})
	now := time.Now()
	b := boundObjects(t, meta, &now)
	err := b.CheckBound(context.Background(), kube.Identity{Namespace: "shop", SecretName: "s1", SecretUID: "secret-uid"})
	if !errors.Is(err, kube.ErrBoundObjectUnverifiable) {
		t.Errorf("CheckBound without RBAC = %v, want %v (refused, not trusted unchecked)", err, kube.ErrBoundObjectUnverifiable)
	}
}

func TestSourceAddresses(t *testing.T) {
	ctx := context.Background()
	cluster := memoryCluster(t)
	pods, _ := startPods(t, cluster, kube.PodCacheConfig{})
	b, err := kube.NewBoundObjects(kube.BoundConfig{Pods: pods, Client: cluster.Client(), PodStatus: cluster})
	if err != nil {
		t.Fatal(err)
	}
	dual, _ := cluster.CreatePod(ctx, "shop", "dual", "", "10.1.2.3", "fd00::7")
	pending, _ := cluster.CreatePod(ctx, "shop", "pending", "")

	got, err := b.SourceAddresses(ctx, podIdentity("shop", "dual", string(dual.UID)))
	if want := []string{"10.1.2.3/32", "fd00::7/128"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("SourceAddresses = %v, %v; want %v", got, err, want)
	}
	for _, tt := range []struct {
		name string
		id   kube.Identity
		want error
	}{
		{"not bound to a pod", kube.Identity{Namespace: "shop", Name: "app"}, kube.ErrPodNoIP},
		{"pod without an IP yet", podIdentity("shop", "pending", string(pending.UID)), kube.ErrPodNoIP},
		{"another pod of that name", podIdentity("shop", "dual", "old"), kube.ErrPodUIDMismatch},
		{"pod gone", podIdentity("shop", "gone", "x"), kube.ErrPodNotFound},
	} {
		if got, err := b.SourceAddresses(ctx, tt.id); !errors.Is(err, tt.want) || got != nil {
			t.Errorf("%s: SourceAddresses = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}

	noStatus, err := kube.NewBoundObjects(kube.BoundConfig{Pods: pods, Client: cluster.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noStatus.SourceAddresses(ctx, podIdentity("shop", "dual", string(dual.UID))); err == nil {
		t.Error("SourceAddresses without a pod status client succeeded")
	}
}

func TestParsePodAddresses(t *testing.T) {
	tests := []struct {
		name, json string
		want       []string
	}{
		{"dual stack", `{"metadata":{"uid":"u"},"status":{"podIP":"10.0.0.1","podIPs":[{"ip":"10.0.0.1"},{"ip":"fd00::1"}]}}`, []string{"10.0.0.1/32", "fd00::1/128"}},
		{"podIP only (old API server)", `{"metadata":{"uid":"u"},"status":{"podIP":"10.0.0.1"}}`, []string{"10.0.0.1/32"}},
		{"pending", `{"metadata":{"uid":"u"},"status":{"phase":"Pending"}}`, nil},
		{"garbage entries dropped", `{"metadata":{"uid":"u"},"status":{"podIPs":[{"ip":"10.0.0.1/8"},{"ip":"fe80::1%eth0"},{"ip":"x"},{"ip":"::ffff:10.0.0.2"}]}}`, []string{"10.0.0.2/32"}},
	}
	for _, tt := range tests {
		a, err := kube.ParsePodAddresses([]byte(tt.json))
		if err != nil || a.UID != "u" || !slices.Equal(a.Prefixes(), tt.want) {
			t.Errorf("%s: %+v %v, prefixes %v; want %v", tt.name, a, err, a.Prefixes(), tt.want)
		}
	}
	if _, err := kube.ParsePodAddresses([]byte(`{"status":`)); err == nil {
		t.Error("truncated JSON parsed")
	}
}

func typesUID(s string) types.UID { return types.UID(s) }

// FuzzParsePodAddresses feeds the pod parser arbitrary JSON: it never panics, and every source
// address it gives is a host prefix (/32 or /128) of an address the pod named.
func FuzzParsePodAddresses(f *testing.F) {
	f.Add([]byte(`{"metadata":{"uid":"u"},"status":{"podIPs":[{"ip":"10.0.0.1"},{"ip":"fd00::1"}]}}`))
	f.Add([]byte(`{"status":{"podIP":"::ffff:1.2.3.4"}}`))
	f.Add([]byte(`{"status":{"podIPs":[{"ip":"fe80::1%eth0"},{"ip":"1.2.3.4/0"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := kube.ParsePodAddresses(data)
		if err != nil {
			return
		}
		prefixes := a.Prefixes()
		if len(prefixes) > len(a.IPs) {
			t.Fatalf("%d prefixes from %d IPs", len(prefixes), len(a.IPs))
		}
		for _, s := range prefixes {
			p, err := netip.ParsePrefix(s)
			if err != nil || !p.IsSingleIP() || p.Addr().Zone() != "" || (p.Addr().Is4() && p.Bits() != 32) || (p.Addr().Is6() && p.Bits() != 128) {
				t.Fatalf("source %q is not a host prefix (%v)", s, err)
			}
		}
	})
}

// TestPodStatusClient reads pods over HTTP as from an API server: the pod's uid and IPs, a
// missing pod as not found, any other failure as an error.
func TestPodStatusClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/namespaces/shop/pods/web-0":
			fmt.Fprint(w, `{"kind":"Pod","metadata":{"name":"web-0","uid":"u1"},"status":{"podIPs":[{"ip":"10.0.0.7"}]}}`)
		case "/api/v1/namespaces/shop/pods/forbidden":
			http.Error(w, `{"kind":"Status","code":403}`, http.StatusForbidden)
		default:
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
		}
	}))
	defer srv.Close()
	c, err := kube.NewPodStatusClient(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := c.PodAddresses(ctx, "shop", "web-0")
	if err != nil || a.UID != "u1" || !slices.Equal(a.IPs, []string{"10.0.0.7"}) {
		t.Errorf("PodAddresses = %+v, %v; want uid u1, 10.0.0.7", a, err)
	}
	if _, err := c.PodAddresses(ctx, "shop", "gone"); !apierrors.IsNotFound(err) {
		t.Errorf("missing pod: %v, want not found", err)
	}
	if _, err := c.PodAddresses(ctx, "shop", "forbidden"); err == nil || apierrors.IsNotFound(err) {
		t.Errorf("forbidden: %v, want an error other than not found", err)
	}
}
