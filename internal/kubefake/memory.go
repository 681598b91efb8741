package kubefake

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// memoryHistory is how many changes a MemoryCluster keeps for watches that resume from an
// older resource version; a watch from before them gets 410 Gone and its informer re-lists,
// as with an API server whose watch cache has moved on.
const memoryHistory = 1024

// MemoryCluster keeps ServiceAccounts and pods (pods.go) in memory behind the Kubernetes
// metadata API: a kube.Store or kube.PodCache built on its Client lists and watches them with
// the calls it makes against an API server, with resource versions, so informers see every change exactly once. It stands in for a
// cluster in dev mode and in tests, and is safe for concurrent use.
type MemoryCluster struct {
	mu      sync.Mutex
	rv      uint64
	objects map[string]*kube.ServiceAccount          // by namespace/name
	pods    map[string]*metav1.PartialObjectMetadata // by namespace/name (pods.go)
	podIPs  map[string][]string                      // status.podIPs, by namespace/name
	history []watch.Event                            // the last memoryHistory changes, oldest first
	events  *watch.Broadcaster
}

// NewMemoryCluster returns a MemoryCluster holding sas.
func NewMemoryCluster(sas ...*kube.ServiceAccount) (*MemoryCluster, error) {
	m := &MemoryCluster{
		objects: map[string]*kube.ServiceAccount{},
		pods:    map[string]*metav1.PartialObjectMetadata{},
		podIPs:  map[string][]string{},
		events:  watch.NewLongQueueBroadcaster(memoryHistory, watch.WaitIfChannelFull),
	}
	for _, sa := range sas {
		if _, err := m.Create(context.Background(), sa); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Close ends every watch and stops the goroutine that feeds them. Call it after the stores
// built on the cluster have stopped.
func (m *MemoryCluster) Close() { m.events.Shutdown() }

// Client is the metadata client to build a Store on.
func (m *MemoryCluster) Client() metadata.Interface { return memoryClient{m} }

var serviceAccountsGroupResource = kube.ServiceAccountsResource.GroupResource()

// commit records a change of a ServiceAccount under m.mu: it gives obj the next resource
// version, stores it (or removes it for a deletion) and tells the watchers.
func (m *MemoryCluster) commit(typ watch.EventType, obj *kube.ServiceAccount) *kube.ServiceAccount {
	return m.commitIn(m.objects, typ, obj)
}

// commitIn is commit for the objects of one kind, kept in store.
func (m *MemoryCluster) commitIn(store map[string]*metav1.PartialObjectMetadata, typ watch.EventType, obj *metav1.PartialObjectMetadata) *metav1.PartialObjectMetadata {
	m.rv++
	obj.ResourceVersion = strconv.FormatUint(m.rv, 10)
	key := obj.Namespace + "/" + obj.Name
	if typ == watch.Deleted {
		delete(store, key)
	} else {
		store[key] = obj
	}
	e := watch.Event{Type: typ, Object: obj.DeepCopy()}
	m.history = append(m.history, e)
	if len(m.history) > memoryHistory {
		m.history = slices.Delete(m.history, 0, len(m.history)-memoryHistory)
	}
	// Queued in order; the broadcaster delivers to watchers registered before this change.
	_ = m.events.Action(e.Type, e.Object)
	return obj.DeepCopy()
}

// Create adds a ServiceAccount, giving it a fresh uid unless it has one. The context is there
// for the API's shape.
func (m *MemoryCluster) Create(_ context.Context, sa *kube.ServiceAccount) (*kube.ServiceAccount, error) {
	if sa.Name == "" {
		return nil, apierrors.NewBadRequest("metadata.name is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[sa.Namespace+"/"+sa.Name]; ok {
		return nil, apierrors.NewAlreadyExists(serviceAccountsGroupResource, sa.Namespace+"/"+sa.Name)
	}
	obj := sa.DeepCopy()
	obj.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: serviceAccountKind}
	if obj.UID == "" {
		obj.UID = uuid.NewUUID()
	}
	if obj.CreationTimestamp.IsZero() {
		obj.CreationTimestamp = metav1.Now()
	}
	return m.commit(watch.Added, obj), nil
}

// Update replaces a ServiceAccount's labels, annotations, finalizers and deletion timestamp.
// Its uid cannot change (delete and create it instead).
func (m *MemoryCluster) Update(_ context.Context, sa *kube.ServiceAccount) (*kube.ServiceAccount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.objects[sa.Namespace+"/"+sa.Name]
	if !ok {
		return nil, apierrors.NewNotFound(serviceAccountsGroupResource, sa.Namespace+"/"+sa.Name)
	}
	if sa.UID != "" && sa.UID != cur.UID {
		return nil, apierrors.NewConflict(serviceAccountsGroupResource, sa.Namespace+"/"+sa.Name,
			errors.New("metadata.uid cannot change"))
	}
	obj := cur.DeepCopy()
	obj.Labels, obj.Annotations = maps.Clone(sa.Labels), maps.Clone(sa.Annotations)
	obj.Finalizers = slices.Clone(sa.Finalizers)
	obj.DeletionTimestamp = sa.DeletionTimestamp.DeepCopy()
	return m.commit(watch.Modified, obj), nil
}

// Delete removes a ServiceAccount.
func (m *MemoryCluster) Delete(_ context.Context, namespace, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.objects[namespace+"/"+name]
	if !ok {
		return apierrors.NewNotFound(serviceAccountsGroupResource, namespace+"/"+name)
	}
	m.commit(watch.Deleted, cur.DeepCopy())
	return nil
}

// Get returns one ServiceAccount.
func (m *MemoryCluster) Get(_ context.Context, namespace, name string) (*kube.ServiceAccount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.objects[namespace+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(serviceAccountsGroupResource, namespace+"/"+name)
	}
	return cur.DeepCopy(), nil
}

// List returns the ServiceAccounts of a namespace ("" = all) that match a label selector
// ("" = all), sorted by namespace and name.
func (m *MemoryCluster) List(_ context.Context, namespace, labelSelector string) ([]kube.ServiceAccount, error) {
	l, err := m.list(namespace, metav1.ListOptions{LabelSelector: labelSelector})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (m *MemoryCluster) list(namespace string, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	return m.listIn(m.objects, namespace, opts)
}

func (m *MemoryCluster) listIn(store map[string]*metav1.PartialObjectMetadata, namespace string, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	if opts.FieldSelector != "" {
		return nil, apierrors.NewBadRequest("field selectors are not supported")
	}
	sel, err := labels.Parse(opts.LabelSelector)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &metav1.PartialObjectMetadataList{
		TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadataList"},
		ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatUint(m.rv, 10)},
	}
	for _, key := range slices.Sorted(maps.Keys(store)) {
		sa := store[key]
		if (namespace == "" || sa.Namespace == namespace) && sel.Matches(labels.Set(sa.Labels)) {
			out.Items = append(out.Items, *sa.DeepCopy())
		}
	}
	return out, nil
}

// watch streams the changes of objects of kind after opts.ResourceVersion ("" or "0": from
// now) in a namespace ("" = all).
func (m *MemoryCluster) watch(kind, namespace string, opts metav1.ListOptions) (watch.Interface, error) {
	if opts.FieldSelector != "" || opts.LabelSelector != "" {
		return nil, apierrors.NewBadRequest("watch selectors are not supported")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var since []watch.Event
	if rv := opts.ResourceVersion; rv != "" && rv != "0" {
		from, err := strconv.ParseUint(rv, 10, 64)
		if err != nil || from > m.rv {
			return nil, apierrors.NewBadRequest("invalid resource version " + strconv.Quote(rv))
		}
		if m.rv-from > uint64(len(m.history)) {
			return nil, apierrors.NewResourceExpired("resource version " + rv + " is too old")
		}
		start := len(m.history) - int(m.rv-from) //nolint:gosec // m.rv-from <= len(m.history), checked above
		since = slices.Clone(m.history[start:])
	}
	// Registered under m.mu, so no change falls between the history and the live events.
	w, err := m.events.WatchWithPrefix(since)
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
		o, ok := e.Object.(*metav1.PartialObjectMetadata)
		return e, ok && o.Kind == kind && (namespace == "" || o.Namespace == namespace)
	}), nil
}

// memoryClient is the metadata.Interface of a MemoryCluster: list, watch, get and delete of
// ServiceAccounts; anything else is refused.
type memoryClient struct{ m *MemoryCluster }

// IsWatchListSemanticsUnSupported tells client-go's reflector to list and then watch rather
// than stream the initial list (which needs bookmarks this in-memory API does not send).
func (memoryClient) IsWatchListSemanticsUnSupported() bool { return true }

func (c memoryClient) Resource(gvr schema.GroupVersionResource) metadata.Getter {
	return memoryResource{m: c.m, gvr: gvr}
}

type memoryResource struct {
	m         *MemoryCluster
	gvr       schema.GroupVersionResource
	namespace string
}

func (r memoryResource) Namespace(ns string) metadata.ResourceInterface {
	r.namespace = ns
	return r
}

func (r memoryResource) check() error {
	if r.gvr != kube.ServiceAccountsResource && r.gvr != kube.PodsResource {
		return apierrors.NewNotFound(r.gvr.GroupResource(), "")
	}
	return nil
}

func (r memoryResource) pods() bool { return r.gvr == kube.PodsResource }

func (r memoryResource) Get(ctx context.Context, name string, _ metav1.GetOptions, subresources ...string) (*metav1.PartialObjectMetadata, error) {
	if err := r.check(); err != nil || len(subresources) > 0 {
		return nil, errors.Join(err, errNoSubresources(subresources))
	}
	if r.pods() {
		return r.m.GetPod(ctx, r.namespace, name)
	}
	return r.m.Get(ctx, r.namespace, name)
}

func (r memoryResource) List(_ context.Context, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	if r.pods() {
		return r.m.listIn(r.m.pods, r.namespace, opts)
	}
	return r.m.list(r.namespace, opts)
}

func (r memoryResource) Watch(_ context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	if r.pods() {
		return r.m.watch(podKind, r.namespace, opts)
	}
	return r.m.watch(serviceAccountKind, r.namespace, opts)
}

func (r memoryResource) Delete(ctx context.Context, name string, _ metav1.DeleteOptions, subresources ...string) error {
	if err := r.check(); err != nil || len(subresources) > 0 {
		return errors.Join(err, errNoSubresources(subresources))
	}
	if r.pods() {
		return r.m.DeletePod(ctx, r.namespace, name)
	}
	return r.m.Delete(ctx, r.namespace, name)
}

func (r memoryResource) DeleteCollection(context.Context, metav1.DeleteOptions, metav1.ListOptions) error {
	return apierrors.NewMethodNotSupported(r.gvr.GroupResource(), "deletecollection")
}

func (r memoryResource) Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*metav1.PartialObjectMetadata, error) {
	return nil, apierrors.NewMethodNotSupported(r.gvr.GroupResource(), "patch")
}

func errNoSubresources(subresources []string) error {
	if len(subresources) == 0 {
		return nil
	}
	return apierrors.NewBadRequest("subresources are not supported")
}
