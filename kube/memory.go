package kube

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/metadata"
	metadatafake "k8s.io/client-go/metadata/fake"
)

// MemoryCluster keeps ServiceAccounts in memory behind the Kubernetes metadata API: a Store
// built on its Client lists and watches them with the same calls it makes against an API
// server. It stands in for a cluster in dev mode and in tests; it is safe for concurrent use.
type MemoryCluster struct {
	client *metadatafake.FakeMetadataClient
}

// NewMemoryCluster returns a MemoryCluster holding sas.
func NewMemoryCluster(sas ...*ServiceAccount) (*MemoryCluster, error) {
	scheme := runtime.NewScheme()
	metav1.AddMetaToScheme(scheme)
	m := &MemoryCluster{client: metadatafake.NewSimpleMetadataClient(scheme)}
	for _, sa := range sas {
		if _, err := m.Create(context.Background(), sa); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Client is the metadata client to build a Store on.
func (m *MemoryCluster) Client() metadata.Interface { return m.client }

func (m *MemoryCluster) api(namespace string) metadatafake.MetadataClient {
	return m.client.Resource(ServiceAccountsResource).Namespace(namespace).(metadatafake.MetadataClient)
}

// stored returns a copy of sa as the API server would store it: typed, with a uid.
func stored(sa *ServiceAccount) *ServiceAccount {
	out := sa.DeepCopy()
	out.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
	if out.UID == "" {
		out.UID = uuid.NewUUID()
	}
	return out
}

// Create adds a ServiceAccount, giving it a fresh uid unless it has one. The context is unused
// and there for the API's shape.
func (m *MemoryCluster) Create(_ context.Context, sa *ServiceAccount) (*ServiceAccount, error) {
	created, err := m.api(sa.Namespace).CreateFake(stored(sa), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create serviceaccount %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	return created, nil
}

// Update replaces a ServiceAccount's metadata (annotations, labels, deletion timestamp...).
func (m *MemoryCluster) Update(_ context.Context, sa *ServiceAccount) (*ServiceAccount, error) {
	updated, err := m.api(sa.Namespace).UpdateFake(stored(sa), metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update serviceaccount %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	return updated, nil
}

// Delete removes a ServiceAccount.
func (m *MemoryCluster) Delete(ctx context.Context, namespace, name string) error {
	if err := m.api(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete serviceaccount %s/%s: %w", namespace, name, err)
	}
	return nil
}

// Get returns one ServiceAccount.
func (m *MemoryCluster) Get(ctx context.Context, namespace, name string) (*ServiceAccount, error) {
	return m.api(namespace).Get(ctx, name, metav1.GetOptions{})
}

// List returns the ServiceAccounts of a namespace ("" = all) that match a label selector
// ("" = all).
func (m *MemoryCluster) List(ctx context.Context, namespace, labelSelector string) ([]ServiceAccount, error) {
	l, err := m.api(namespace).List(ctx, metav1.ListOptions{LabelSelector: labelSelector})
	if err != nil {
		return nil, fmt.Errorf("list serviceaccounts: %w", err)
	}
	return l.Items, nil
}
