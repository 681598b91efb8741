package kubefake

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

func managedSA(ns, name, uid string, annotations map[string]string) *kube.ServiceAccount {
	return &kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: types.UID(uid), Annotations: annotations,
		Labels: map[string]string{ManagedByLabel: ManagedBy},
	}}
}

func wantSA(ns, name, uid string, annotations map[string]string) kube.ServiceAccount {
	return kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Annotations: annotations}}
}

func TestSyncServiceAccounts(t *testing.T) {
	ctx := context.Background()
	foreign := &kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "default", UID: "foreign"}}
	client := memoryCluster(t,
		foreign,
		managedSA("a", "kept", "uid-kept", map[string]string{"k": "v"}),
		managedSA("a", "changed", "uid-changed", map[string]string{"k": "old"}),
		managedSA("a", "recreated", "uid-old", nil),
		managedSA("b", "gone", "uid-gone", nil),
	)
	res, err := SyncServiceAccounts(ctx, client, []kube.ServiceAccount{
		wantSA("a", "kept", "", map[string]string{"k": "v"}),
		wantSA("a", "changed", "", map[string]string{"k": "new"}),
		wantSA("a", "recreated", "uid-new", nil),
		wantSA("b", "new", "", map[string]string{"x": "y"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Created != 2 || res.Updated != 1 || res.Deleted != 2 {
		t.Errorf("created/updated/deleted = %d/%d/%d, want 2/1/2", res.Created, res.Updated, res.Deleted)
	}
	var got []string
	for _, sa := range res.ServiceAccounts {
		got = append(got, sa.Namespace+"/"+sa.Name)
	}
	if g := strings.Join(got, " "); g != "a/kept a/changed a/recreated b/new" {
		t.Errorf("result ServiceAccounts = %s, want them in the order given", g)
	}

	get := func(ns, name string) *kube.ServiceAccount {
		t.Helper()
		sa, err := client.Get(ctx, ns, name)
		if err != nil {
			t.Fatalf("get %s/%s: %v", ns, name, err)
		}
		return sa
	}
	if sa := get("a", "kept"); sa.UID != "uid-kept" {
		t.Errorf("kept uid = %s, want uid-kept", sa.UID)
	}
	if sa := get("a", "changed"); sa.UID != "uid-changed" || sa.Annotations["k"] != "new" {
		t.Errorf("changed = uid %s annotations %v, want uid-changed k=new", sa.UID, sa.Annotations)
	}
	if sa := get("a", "recreated"); sa.UID != "uid-new" {
		t.Errorf("recreated uid = %s, want uid-new", sa.UID)
	}
	if sa := get("b", "new"); sa.UID == "" || sa.Labels[ManagedByLabel] != ManagedBy || sa.Annotations["x"] != "y" {
		t.Errorf("new = %+v, want a uid, the managed-by label and x=y", sa.ObjectMeta)
	}
	if _, err := client.Get(ctx, "b", "gone"); err == nil {
		t.Error("b/gone still exists")
	}
	if sa := get("kube-system", "default"); sa.UID != "foreign" {
		t.Errorf("a ServiceAccount the sync did not create was changed: %+v", sa.ObjectMeta)
	}

	// A second sync with the same input changes nothing.
	rvBefore := resourceVersion(t, client)
	res, err = SyncServiceAccounts(ctx, client, []kube.ServiceAccount{
		wantSA("a", "kept", "", map[string]string{"k": "v"}),
		wantSA("a", "changed", "", map[string]string{"k": "new"}),
		wantSA("a", "recreated", "uid-new", nil),
		wantSA("b", "new", "", map[string]string{"x": "y"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if rv := resourceVersion(t, client); res.Created+res.Updated+res.Deleted != 0 || rv != rvBefore {
		t.Errorf("idempotent sync did %+v and moved the resource version from %s to %s, want no change", res, rvBefore, rv)
	}

	// A wanted name taken by a ServiceAccount the sync did not create is left alone.
	if _, err := SyncServiceAccounts(ctx, client, []kube.ServiceAccount{wantSA("kube-system", "default", "", nil)}); err == nil ||
		!strings.Contains(err.Error(), "not created by this sync") {
		t.Errorf("error = %v, want one saying the ServiceAccount is not ours", err)
	}
	if sa := get("kube-system", "default"); sa.UID != "foreign" {
		t.Errorf("foreign ServiceAccount changed: %+v", sa.ObjectMeta)
	}
}

// resourceVersion is the cluster's current resource version, as a list reports it.
func resourceVersion(t *testing.T, m *MemoryCluster) string {
	t.Helper()
	l, err := m.Client().Resource(kube.ServiceAccountsResource).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.ResourceVersion
}
