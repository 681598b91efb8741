package kubefake

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

func serviceAccount(ns, name, uid string, annotations map[string]string) *kube.ServiceAccount {
	return &kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: types.UID(uid), Annotations: annotations,
	}}
}

// memoryCluster returns a MemoryCluster holding sas, closed when the test ends.
func memoryCluster(t *testing.T, sas ...*kube.ServiceAccount) *MemoryCluster {
	t.Helper()
	m, err := NewMemoryCluster(sas...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// nextEvent reads one event or fails after a few seconds.
func nextEvent(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case e, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("watch closed")
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event")
	}
	return watch.Event{}
}

func eventString(e watch.Event) string {
	sa := e.Object.(*kube.ServiceAccount)
	return fmt.Sprintf("%s %s/%s rv=%s", e.Type, sa.Namespace, sa.Name, sa.ResourceVersion)
}

func TestMemoryClusterWatchResumes(t *testing.T) {
	ctx := context.Background()
	m := memoryCluster(t, serviceAccount("a", "one", "", nil))
	api := m.Client().Resource(kube.ServiceAccountsResource)
	l, err := api.List(ctx, metav1.ListOptions{})
	if err != nil || len(l.Items) != 1 || l.ResourceVersion != "1" {
		t.Fatalf("list = %+v, %v; want one item at resource version 1", l, err)
	}

	// Changes between a list and the watch that follows it are replayed, in order.
	if _, err := m.Create(ctx, serviceAccount("b", "two", "", nil)); err != nil {
		t.Fatal(err)
	}
	one, err := m.Get(ctx, "a", "one")
	if err != nil {
		t.Fatal(err)
	}
	one.Annotations = map[string]string{kube.AnnotationAllowedPub: "x"}
	if _, err := m.Update(ctx, one); err != nil {
		t.Fatal(err)
	}
	all, err := api.Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Stop()
	onlyA, err := api.Namespace("a").Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer onlyA.Stop()
	for _, want := range []string{"ADDED b/two rv=2", "MODIFIED a/one rv=3"} {
		if got := eventString(nextEvent(t, all)); got != want {
			t.Errorf("replayed %q, want %q", got, want)
		}
	}
	// Then live changes; a namespaced watch sees only its namespace.
	if err := m.Delete(ctx, "b", "two"); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, "a", "one"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DELETED b/two rv=4", "DELETED a/one rv=5"} {
		if got := eventString(nextEvent(t, all)); got != want {
			t.Errorf("live %q, want %q", got, want)
		}
	}
	for _, want := range []string{"MODIFIED a/one rv=3", "DELETED a/one rv=5"} {
		if got := eventString(nextEvent(t, onlyA)); got != want {
			t.Errorf("namespace a: %q, want %q", got, want)
		}
	}
}

func TestMemoryClusterRefusals(t *testing.T) {
	ctx := context.Background()
	m := memoryCluster(t, serviceAccount("a", "one", "uid-1", nil))
	if _, err := m.Create(ctx, serviceAccount("a", "one", "", nil)); !apierrors.IsAlreadyExists(err) {
		t.Errorf("duplicate create: %v, want AlreadyExists", err)
	}
	if _, err := m.Update(ctx, serviceAccount("a", "one", "uid-2", nil)); !apierrors.IsConflict(err) {
		t.Errorf("uid change: %v, want Conflict", err)
	}
	if _, err := m.Update(ctx, serviceAccount("a", "ghost", "", nil)); !apierrors.IsNotFound(err) {
		t.Errorf("update of a missing one: %v, want NotFound", err)
	}
	if err := m.Delete(ctx, "a", "ghost"); !apierrors.IsNotFound(err) {
		t.Errorf("delete of a missing one: %v, want NotFound", err)
	}
	api := m.Client().Resource(kube.ServiceAccountsResource)
	if _, err := api.Watch(ctx, metav1.ListOptions{ResourceVersion: "99"}); !apierrors.IsBadRequest(err) {
		t.Errorf("watch from the future: %v, want BadRequest", err)
	}
	if _, err := m.Client().Resource(kube.ServiceAccountsResource.GroupVersion().WithResource("secrets")).List(ctx, metav1.ListOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("list of another resource: %v, want NotFound", err)
	}
	if _, err := m.List(ctx, "", "a in (b"); !apierrors.IsBadRequest(err) {
		t.Errorf("bad label selector: %v, want BadRequest", err)
	}

	// A watch from before the kept history is told to re-list (410 Gone), as an API server does.
	for i := range memoryHistory + 1 {
		sa := serviceAccount("a", "one", "", map[string]string{"n": fmt.Sprint(i)})
		if _, err := m.Update(ctx, sa); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := api.Watch(ctx, metav1.ListOptions{ResourceVersion: "1"}); !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Errorf("watch from a forgotten version: %v, want 410 Gone", err)
	}
	w, err := api.Watch(ctx, metav1.ListOptions{ResourceVersion: "2"})
	if err != nil {
		t.Fatalf("watch from the oldest kept version: %v", err)
	}
	defer w.Stop()
	if got := eventString(nextEvent(t, w)); got != "MODIFIED a/one rv=3" {
		t.Errorf("first replayed event %q", got)
	}
}
