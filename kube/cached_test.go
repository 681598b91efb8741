package kube

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func TestTrimServiceAccount(t *testing.T) {
	now := metav1.Now()
	sa := &ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Namespace: "shop", Name: "api", UID: "u1", ResourceVersion: "7", DeletionTimestamp: &now,
		Labels:      map[string]string{"team": "a"},
		Annotations: map[string]string{AnnotationDeniedPub: "x", AnnotationAllowedPub: "a,b", "other/key": "v"},
	}}
	obj, err := trimServiceAccount(sa)
	if err != nil {
		t.Fatal(err)
	}
	c := obj.(*cachedObject)
	if c.Namespace != "shop" || c.Name != "api" || c.UID != "u1" || c.ResourceVersion != "7" || c.DeletionTimestamp != &now {
		t.Errorf("entry %+v does not carry the ServiceAccount's identity", c)
	}
	want := []annotation{{AnnotationAllowedPub, "a,b"}, {AnnotationDeniedPub, "x"}}
	if len(c.annotations) != 2 || c.annotations[0] != want[0] || c.annotations[1] != want[1] {
		t.Errorf("annotations %v, want the nats.io ones sorted: %v", c.annotations, want)
	}
	if m := c.annotationMap(); len(m) != 2 || m[AnnotationAllowedPub] != "a,b" {
		t.Errorf("annotationMap = %v", m)
	}
	if key, err := cache.MetaNamespaceKeyFunc(c); err != nil || key != "shop/api" {
		t.Errorf("informer key = %q, %v; want shop/api", key, err)
	}
	d := c.DeepCopyObject().(*cachedObject)
	d.annotations[0].value = "changed"
	d.DeletionTimestamp.Time = d.DeletionTimestamp.AddDate(1, 0, 0)
	if c.annotations[0].value != "a,b" || !c.DeletionTimestamp.Equal(&now) {
		t.Error("DeepCopyObject shares the annotations or the deletion time")
	}
	if !c.sameAnnotations(c.DeepCopyObject().(*cachedObject)) || c.sameAnnotations(d) {
		t.Error("sameAnnotations does not compare the annotations")
	}
	if other, _ := trimServiceAccount("not a ServiceAccount"); other != "not a ServiceAccount" {
		t.Errorf("trimServiceAccount changed a foreign object: %v", other)
	}
}
