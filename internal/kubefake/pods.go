package kubefake

import (
	"context"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// Kinds of the objects a MemoryCluster serves, as their watch events carry them.
const (
	serviceAccountKind = "ServiceAccount"
	podKind            = "Pod"
)

var podsGroupResource = kube.PodsResource.GroupResource()

// CreatePod adds a pod (its metadata; ips become its status.podIPs), giving it a fresh uid
// unless uid is set, and returns it.
func (m *MemoryCluster) CreatePod(_ context.Context, namespace, name string, uid types.UID, ips ...string) (*metav1.PartialObjectMetadata, error) {
	if name == "" {
		return nil, apierrors.NewBadRequest("metadata.name is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := namespace + "/" + name
	if _, ok := m.pods[key]; ok {
		return nil, apierrors.NewAlreadyExists(podsGroupResource, key)
	}
	if uid == "" {
		uid = uuid.NewUUID()
	}
	obj := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: podKind},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: uid, CreationTimestamp: metav1.Now()},
	}
	m.podIPs[key] = slices.Clone(ips)
	return m.commitIn(m.pods, watch.Added, obj), nil
}

// MarkPodDeleting sets a pod's deletion timestamp, as a graceful delete does.
func (m *MemoryCluster) MarkPodDeleting(_ context.Context, namespace, name string, at metav1.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.pods[namespace+"/"+name]
	if !ok {
		return apierrors.NewNotFound(podsGroupResource, namespace+"/"+name)
	}
	obj := cur.DeepCopy()
	obj.DeletionTimestamp = &at
	m.commitIn(m.pods, watch.Modified, obj)
	return nil
}

// DeletePod removes a pod.
func (m *MemoryCluster) DeletePod(_ context.Context, namespace, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := namespace + "/" + name
	cur, ok := m.pods[key]
	if !ok {
		return apierrors.NewNotFound(podsGroupResource, key)
	}
	delete(m.podIPs, key)
	m.commitIn(m.pods, watch.Deleted, cur.DeepCopy())
	return nil
}

// GetPod returns one pod's metadata.
func (m *MemoryCluster) GetPod(_ context.Context, namespace, name string) (*metav1.PartialObjectMetadata, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.pods[namespace+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(podsGroupResource, namespace+"/"+name)
	}
	return cur.DeepCopy(), nil
}

// PodAddresses implements kube.PodStatusGetter: the pod's uid and the ips it was created with.
func (m *MemoryCluster) PodAddresses(_ context.Context, namespace, name string) (kube.PodAddresses, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := namespace + "/" + name
	cur, ok := m.pods[key]
	if !ok {
		return kube.PodAddresses{}, apierrors.NewNotFound(podsGroupResource, key)
	}
	return kube.PodAddresses{UID: string(cur.UID), IPs: slices.Clone(m.podIPs[key])}, nil
}
