package kube

import (
	"slices"
	"strings"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// cachedObject is what the informer caches hold of one ServiceAccount or pod: what a decision
// reads and nothing else. At 50,000 ServiceAccounts with three annotations each it is about a
// third of a trimmed PartialObjectMetadata (whose ObjectMeta struct and annotation map alone
// take some 600 bytes): see trimServiceAccount and trimPod.
type cachedObject struct {
	Namespace, Name, ResourceVersion string
	UID                              types.UID
	DeletionTimestamp                *metav1.Time
	// annotations are a ServiceAccount's nats.io/ annotations, sorted by key; a pod's are not
	// kept.
	annotations []annotation
}

type annotation struct{ key, value string }

// trimServiceAccount turns a decoded ServiceAccount into the cache's entry: its namespace, name,
// uid, resourceVersion, deletion timestamp and nats.io/ annotations (the only ones ParsePolicy
// reads), so that nothing else the API server sent (labels, other annotations, managed fields,
// owner references) stays reachable from the cache. The namespace and the annotation keys,
// which repeat across ServiceAccounts, are interned. The decoded object is not modified: whoever
// decoded it may still hold it.
func trimServiceAccount(obj any) (any, error) {
	sa, ok := obj.(*ServiceAccount)
	if !ok {
		return obj, nil
	}
	c := &cachedObject{
		Namespace:         unique.Make(sa.Namespace).Value(),
		Name:              sa.Name,
		UID:               sa.UID,
		ResourceVersion:   sa.ResourceVersion,
		DeletionTimestamp: sa.DeletionTimestamp,
	}
	n := 0
	for k := range sa.Annotations {
		if strings.HasPrefix(k, annotationPrefix) {
			n++
		}
	}
	if n > 0 {
		c.annotations = make([]annotation, 0, n)
		for k, v := range sa.Annotations {
			if strings.HasPrefix(k, annotationPrefix) {
				c.annotations = append(c.annotations, annotation{unique.Make(k).Value(), v})
			}
		}
		slices.SortFunc(c.annotations, func(a, b annotation) int { return strings.Compare(a.key, b.key) })
	}
	return c, nil
}

// annotationMap is the nats.io/ annotations as ParsePolicy takes them.
func (c *cachedObject) annotationMap() map[string]string {
	if len(c.annotations) == 0 {
		return nil
	}
	m := make(map[string]string, len(c.annotations))
	for _, a := range c.annotations {
		m[a.key] = a.value
	}
	return m
}

// sameAnnotations reports whether c and o have the same nats.io/ annotations.
func (c *cachedObject) sameAnnotations(o *cachedObject) bool {
	return slices.Equal(c.annotations, o.annotations)
}

// GetObjectMeta gives the informer's key function the namespace and name (meta.Accessor).
func (c *cachedObject) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Name, UID: c.UID, ResourceVersion: c.ResourceVersion,
		DeletionTimestamp: c.DeletionTimestamp}
}

// GetObjectKind is part of runtime.Object; the entry carries no kind.
func (c *cachedObject) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject is part of runtime.Object.
func (c *cachedObject) DeepCopyObject() runtime.Object {
	d := *c
	d.annotations = slices.Clone(c.annotations)
	if c.DeletionTimestamp != nil {
		t := *c.DeletionTimestamp
		d.DeletionTimestamp = &t
	}
	return &d
}
