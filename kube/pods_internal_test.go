package kube

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// TestPodCacheEvents checks what the pod cache reports to its RevocationSink: a re-list after a
// missed watch shows a pod recreated under its name as an update with another uid.
func TestPodCacheEvents(t *testing.T) {
	var got []Revocation
	c := &PodCache{revoke: func(r Revocation) { got = append(got, r) }, count: noGauge{}}
	pod := func(uid string) *cachedObject {
		return &cachedObject{Namespace: "shop", Name: "web-0", UID: types.UID(uid)}
	}
	c.updated(pod("u1"), pod("u1")) // a status or label change: nothing
	c.updated(pod("u1"), pod("u2"))
	c.deleted(pod("u2"))
	c.deleted(cache.DeletedFinalStateUnknown{Key: "shop/web-0", Obj: pod("u3")})
	want := []Revocation{
		{Reason: RevokePodRecreated, Namespace: "shop", PodUID: "u1"},
		{Reason: RevokePodDeleted, Namespace: "shop", PodUID: "u2"},
		{Reason: RevokePodDeleted, Namespace: "shop", PodUID: "u3"},
	}
	if len(got) != len(want) {
		t.Fatalf("revocations %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("revocation %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// Without a sink nothing is reported, and nothing fails.
	(&PodCache{count: noGauge{}}).deleted(pod("u4"))
}

// TestTrimPod checks that the cache keeps only what a decision reads.
func TestTrimPod(t *testing.T) {
	now := metav1.Now()
	in := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Namespace: "shop", Name: "web-0", UID: "u1", ResourceVersion: "42", DeletionTimestamp: &now,
		Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"a": "b"},
		OwnerReferences: []metav1.OwnerReference{{Name: "web"}}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}},
		GenerateName: "web-", Finalizers: []string{"f"},
	}}
	out, err := trimPod(in)
	if err != nil {
		t.Fatal(err)
	}
	// The compact entry has room for nothing else; its annotations stay empty for a pod.
	p := out.(*cachedObject)
	want := cachedObject{Namespace: "shop", Name: "web-0", UID: "u1", ResourceVersion: "42", DeletionTimestamp: &now}
	if p.Namespace != want.Namespace || p.Name != want.Name || p.UID != want.UID || p.ResourceVersion != want.ResourceVersion ||
		p.DeletionTimestamp != want.DeletionTimestamp || p.annotations != nil {
		t.Errorf("trimPod kept %+v, want %+v", p, want)
	}
	if in.Labels == nil {
		t.Error("trimPod modified its input")
	}
}

// noGauge is a gauge that records nothing.
type noGauge struct{ prometheus.Gauge }

func (noGauge) Inc() {}
func (noGauge) Dec() {}
