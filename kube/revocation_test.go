package kube_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

func TestConnectionNameRoundTrip(t *testing.T) {
	for _, id := range []kube.Identity{
		{Namespace: "shop", Name: "api", UID: "0c6d-1", PodName: "api-7f9c", PodUID: "3b1e-2"},
		{Namespace: "shop", Name: "api", UID: "0c6d-1"},
		{Namespace: "shop", Name: "api.v2"},
	} {
		name := id.ConnectionName()
		got, ok := kube.ParseConnectionName(name)
		if !ok || got != id {
			t.Errorf("ParseConnectionName(%q) = %+v, %v; want %+v", name, got, ok, id)
		}
	}
	full := kube.Identity{Namespace: "shop", Name: "api", UID: "u1", PodName: "p", PodUID: "pu"}.ConnectionName()
	if want := "system:serviceaccount:shop:api uid=u1 pod=p pod-uid=pu"; full != want {
		t.Errorf("ConnectionName = %q, want %q", full, want)
	}
	for _, bad := range []string{
		"", "alice", "system:serviceaccount:", "system:serviceaccount:shop", "system:serviceaccount::api",
		"system:serviceaccount:shop:", "system:serviceaccount:shop:api:x", "system:serviceaccount:shop:api uid",
		"system:serviceaccount:shop:api uid=", "system:serviceaccount:shop:api uid=a uid=b",
		"system:serviceaccount:shop:api color=red", "system:serviceaccount:shop:api  uid=a",
		"system:serviceaccount:shop:api uid=" + strings.Repeat("a", 2000),
	} {
		if id, ok := kube.ParseConnectionName(bad); ok {
			t.Errorf("ParseConnectionName(%q) = %+v, want refused", bad, id)
		}
	}
}

func FuzzParseConnectionName(f *testing.F) {
	f.Add("system:serviceaccount:shop:api uid=u1 pod=p pod-uid=pu")
	f.Add("system:serviceaccount:a:b")
	f.Add("system:serviceaccount:a:b uid==")
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := kube.ParseConnectionName(s)
		if !ok {
			return
		}
		// What parses names its ServiceAccount and writes back as itself.
		if id.Namespace == "" || id.Name == "" {
			t.Fatalf("ParseConnectionName(%q) = %+v: empty namespace or name", s, id)
		}
		if back := id.ConnectionName(); back != s {
			t.Fatalf("ParseConnectionName(%q) = %+v, which writes back as %q", s, id, back)
		}
	})
}

func TestRevocationMatches(t *testing.T) {
	conn := kube.Identity{Namespace: "shop", Name: "api", UID: "sa1", PodName: "api-1", PodUID: "pod1"}
	noUID := kube.Identity{Namespace: "shop", Name: "api"}
	cases := []struct {
		r             kube.Revocation
		conn, uidless bool
	}{
		{kube.Revocation{Namespace: "shop", Name: "api", UID: "sa1"}, true, true},
		{kube.Revocation{Namespace: "shop", Name: "api", UID: "sa0"}, false, true},
		{kube.Revocation{Namespace: "shop", Name: "web", UID: "sa9"}, false, false},
		{kube.Revocation{Namespace: "bank", Name: "api", UID: "sa1"}, false, false},
		{kube.Revocation{Namespace: "shop", PodUID: "pod1"}, true, false},
		{kube.Revocation{Namespace: "shop", PodUID: "pod2"}, false, false},
		{kube.Revocation{Namespace: "shop"}, true, true},
		{kube.Revocation{Namespace: "bank"}, false, false},
	}
	for _, c := range cases {
		if got := c.r.Matches(conn); got != c.conn {
			t.Errorf("%+v.Matches(%+v) = %v, want %v", c.r, conn, got, c.conn)
		}
		if got := c.r.Matches(noUID); got != c.uidless {
			t.Errorf("%+v.Matches(%+v) = %v, want %v", c.r, noUID, got, c.uidless)
		}
	}
}

// revocations collects what a Store reports, in order.
type revocations chan kube.Revocation

func (r revocations) sink(rv kube.Revocation) { r <- rv }

// TestStoreReportsRevocations drives a Store's informer through the changes that take a grant
// away, and those that do not.
func TestStoreReportsRevocations(t *testing.T) {
	ctx := context.Background()
	pub := "nats.io/allowed-pub-subjects"
	cluster := memoryCluster(t,
		serviceAccount("shop", "api", "uid-1", map[string]string{pub: "orders.*,billing.>"}),
		serviceAccount("shop", "web", "uid-2", nil))
	rec := make(revocations, 64)
	startStore(t, cluster, kube.StoreConfig{OnRevocation: rec.sink})

	update := func(name string, ann map[string]string) {
		t.Helper()
		sa, err := cluster.Get(ctx, "shop", name)
		if err != nil {
			t.Fatal(err)
		}
		sa.Annotations = ann
		if _, err := cluster.Update(ctx, sa); err != nil {
			t.Fatal(err)
		}
	}
	// expect takes the next revocations and checks they are want. A step that must report
	// nothing expects none: the informer delivers events in order, so anything it did report
	// would come before, and fail, the next step's.
	expect := func(step string, want ...kube.Revocation) {
		t.Helper()
		for _, w := range want {
			select {
			case got := <-rec:
				if got != w {
					t.Fatalf("%s: revocation %+v, want %+v", step, got, w)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no revocation within 5s, want %+v", step, w)
			}
		}
	}

	update("api", map[string]string{pub: "orders.*,billing.>,audit.>"})
	expect("a grant added")
	update("api", map[string]string{pub: "orders.*,billing.>,audit.>", "team": "a"})
	expect("an unrelated annotation")
	update("api", map[string]string{pub: "orders.*,audit.>"})
	expect("a grant removed", kube.Revocation{Reason: kube.RevokeGrantNarrowed, Namespace: "shop", Name: "api", UID: "uid-1"})
	update("api", map[string]string{pub: "orders.*,audit.>", "nats.io/denied-pub-subjects": "orders.secret"})
	expect("a deny added", kube.Revocation{Reason: kube.RevokeGrantNarrowed, Namespace: "shop", Name: "api", UID: "uid-1"})

	if err := cluster.Delete(ctx, "shop", "api"); err != nil {
		t.Fatal(err)
	}
	expect("deleted", kube.Revocation{Reason: kube.RevokeServiceAccountDeleted, Namespace: "shop", Name: "api", UID: "uid-1"})

	web, err := cluster.Get(ctx, "shop", "web")
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	web.DeletionTimestamp = &now
	if _, err := cluster.Update(ctx, web); err != nil {
		t.Fatal(err)
	}
	expect("deletion begun", kube.Revocation{Reason: kube.RevokeServiceAccountDeleted, Namespace: "shop", Name: "web", UID: "uid-2"})
	if err := cluster.Delete(ctx, "shop", "web"); err != nil {
		t.Fatal(err)
	}
	expect("deletion finished: reported once already")

	// A last change that reports: nothing from the steps above may come before it.
	if _, err := cluster.Create(ctx, serviceAccount("shop", "last", "uid-3", nil)); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Delete(ctx, "shop", "last"); err != nil {
		t.Fatal(err)
	}
	expect("a last deletion", kube.Revocation{Reason: kube.RevokeServiceAccountDeleted, Namespace: "shop", Name: "last", UID: "uid-3"})
	select {
	case rv := <-rec:
		t.Errorf("revocation %+v after the last one", rv)
	default:
	}
}
