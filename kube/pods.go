package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// PodsResource is the resource the PodCache lists and watches (metadata only).
var PodsResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// PodCacheConfig configures a PodCache.
type PodCacheConfig struct {
	// Namespaces limits the cache to these namespaces (one informer each); empty means
	// cluster-wide. Give it the ServiceAccount store's namespaces: a pod-bound token's pod is
	// in its ServiceAccount's namespace.
	Namespaces []string
	// Logger receives informer start, sync and list/watch failure messages. Nil discards.
	Logger *slog.Logger
	// Registerer receives nats_callout_pods, nats_callout_pod_informer_synced and
	// nats_callout_pod_informer_watch_errors_total. Nil leaves the metrics unregistered.
	Registerer prometheus.Registerer
	// OnRevocation, if set, is told when a pod is deleted (RevokePodDeleted) or replaced by one
	// of the same name (RevokePodRecreated), with the uid of the pod that went. It is called
	// from the informer's event handlers and must not block. Nil: nobody is told.
	OnRevocation RevocationSink
}

// PodCache is a metadata-only shared-informer cache of pods that answers "does the pod this
// token is bound to still exist, with the uid the token names". It keeps per pod only its
// namespace, name, uid, resourceVersion and deletion timestamp (see trimPod).
type PodCache struct {
	// informerGroup runs the informers (Run, WaitSynced, HasSynced) and holds them by
	// namespace ("" = cluster-wide); it also carries the logger.
	informerGroup
	revoke    RevocationSink
	count     prometheus.Gauge
	watchErrs prometheus.Counter
	failing   atomic.Bool
}

// NewPodCache builds the informers (without starting them: see Run). client is a metadata
// client: metadata.NewForConfig for a cluster, a kubefake.MemoryCluster's in tests.
func NewPodCache(client metadata.Interface, cfg PodCacheConfig) (*PodCache, error) {
	if client == nil {
		return nil, errors.New("kube: kubernetes client is required")
	}
	namespaces := slices.Clone(cfg.Namespaces)
	slices.Sort(namespaces)
	namespaces = slices.Compact(namespaces)
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	factory := promauto.With(cfg.Registerer)
	c := &PodCache{
		revoke: cfg.OnRevocation,
		count: factory.NewGauge(prometheus.GaugeOpts{
			Name: "nats_callout_pods",
			Help: "Pods in the bound-object informer cache (VERIFY_BOUND_OBJECTS).",
		}),
		informerGroup: informerGroup{kind: "pod", log: logger, syncGauge: factory.NewGauge(prometheus.GaugeOpts{
			Name: "nats_callout_pod_informer_synced",
			Help: "1 when the pod informer cache has synced, else 0.",
		})},
		watchErrs: factory.NewCounter(prometheus.CounterOpts{
			Name: "nats_callout_pod_informer_watch_errors_total",
			Help: "Failed pod list and watch calls to the API server; decisions use the cache meanwhile.",
		}),
	}
	for _, ns := range namespaces {
		inf, synced, err := c.newInformer(client, ns)
		if err != nil {
			return nil, fmt.Errorf("kube: pod informer: %w", err)
		}
		c.add(ns, inf, synced)
	}
	c.syncedAttrs = func() []any { return []any{"pods", c.Len()} }
	return c, nil
}

func (c *PodCache) newInformer(client metadata.Interface, ns string) (cache.SharedIndexInformer, cache.InformerSynced, error) {
	api := client.Resource(PodsResource).Namespace(ns)
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			l, err := api.List(ctx, opts)
			c.apiResult(ctx, ns, err)
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := api.Watch(ctx, opts)
			c.apiResult(ctx, ns, err)
			return w, err
		},
	}, client)
	inf := cache.NewSharedIndexInformerWithOptions(lw, &metav1.PartialObjectMetadata{}, cache.SharedIndexInformerOptions{
		ObjectDescription: "pods",
	})
	if err := inf.SetTransform(trimPod); err != nil {
		return nil, nil, err
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.count.Inc() },
		UpdateFunc: c.updated,
		DeleteFunc: c.deleted,
	})
	if err != nil {
		return nil, nil, err
	}
	return inf, reg.HasSynced, nil
}

// updated reports a pod replaced by another of the same name: after a missed watch the
// informer's re-list shows the new pod as an update of the old one.
func (c *PodCache) updated(old, cur any) {
	o, ok1 := old.(*cachedObject)
	n, ok2 := cur.(*cachedObject)
	if ok1 && ok2 && o.UID != n.UID && c.revoke != nil {
		c.revoke(Revocation{Reason: RevokePodRecreated, Namespace: o.Namespace, PodUID: string(o.UID)})
	}
}

func (c *PodCache) deleted(obj any) {
	c.count.Dec()
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if p, ok := obj.(*cachedObject); ok && c.revoke != nil {
		c.revoke(Revocation{Reason: RevokePodDeleted, Namespace: p.Namespace, PodUID: string(p.UID)})
	}
}

// trimPod keeps only what a decision reads (namespace, name, uid, deletion timestamp) and the
// resourceVersion, in the cache's compact entry (the namespace interned): labels, annotations,
// owner references and managed fields are most of a pod's metadata and would multiply the
// cache's size.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &cachedObject{
		Namespace: unique.Make(p.Namespace).Value(), Name: p.Name, UID: p.UID, ResourceVersion: p.ResourceVersion,
		DeletionTimestamp: p.DeletionTimestamp,
	}, nil
}

// apiResult counts failed list/watch calls and logs the first of a run of failures and the
// recovery after it; the informer retries by itself.
func (c *PodCache) apiResult(ctx context.Context, ns string, err error) {
	if err == nil {
		if c.failing.Swap(false) {
			c.log.InfoContext(ctx, "pod list/watch works again", "namespace", ns)
		}
		return
	}
	if ctx.Err() != nil {
		return
	}
	c.watchErrs.Inc()
	if !c.failing.Swap(true) {
		c.log.WarnContext(ctx, "pod list/watch failed; bound-object checks use the cache until the API server answers (RBAC: list and watch on pods)",
			"namespace", ns, "error", err)
	}
}

// Len is the number of pods cached.
func (c *PodCache) Len() int {
	n := 0
	for _, inf := range c.informers {
		n += len(inf.GetStore().ListKeys())
	}
	return n
}

// Check verifies the pod a token is bound to: it must be in the cache with the token's uid,
// and not past the end of its deletion grace period (a terminating pod still runs until then
// and may need NATS to shut down cleanly). A token bound to no pod passes. Before the cache
// has synced, a pod not (yet) in it gives ErrPodsNotSynced (which is ErrNotSynced).
func (c *PodCache) Check(id Identity, now time.Time) error {
	if id.PodName == "" && id.PodUID == "" {
		return nil
	}
	inf, ok := c.informerFor(id.Namespace)
	if !ok {
		return fmt.Errorf("%w: %s/%s: namespace not watched", ErrPodNotFound, id.Namespace, id.PodName)
	}
	obj, exists, err := inf.GetIndexer().GetByKey(id.Namespace + "/" + id.PodName)
	switch {
	case err != nil:
		return fmt.Errorf("look up pod %s/%s: %w", id.Namespace, id.PodName, err)
	case !exists && !c.HasSynced():
		return fmt.Errorf("%w: pod %s/%s not found yet", ErrPodsNotSynced, id.Namespace, id.PodName)
	case !exists:
		return fmt.Errorf("%w: %s/%s", ErrPodNotFound, id.Namespace, id.PodName)
	}
	p, ok := obj.(*cachedObject)
	switch {
	case !ok:
		return fmt.Errorf("look up pod %s/%s: cache holds %T", id.Namespace, id.PodName, obj)
	case string(p.UID) != id.PodUID:
		return fmt.Errorf("%w: %s/%s has uid %s, token has %q", ErrPodUIDMismatch, id.Namespace, id.PodName, p.UID, id.PodUID)
	case p.DeletionTimestamp != nil && !now.Before(p.DeletionTimestamp.Time):
		return fmt.Errorf("%w: %s/%s terminated at %s", ErrPodNotFound, id.Namespace, id.PodName,
			p.DeletionTimestamp.UTC().Format(time.RFC3339))
	}
	return nil
}
