package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// LabelAccount is the Namespace label that places the namespace's ServiceAccounts in a NATS
// account of their own. It is on the Namespace, which the cluster admin owns, never on the
// ServiceAccount: whoever edits a ServiceAccount must not be able to move it into another
// tenant's account.
const LabelAccount = "nats.io/account"

// NamespacesResource is the resource the namespace cache lists and watches.
var NamespacesResource = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// NamespaceConfig configures a NamespaceCache.
type NamespaceConfig struct {
	// Namespaces limits the cache to these namespaces (one informer each, listing and watching
	// only that namespace by name, so RBAC can name them). Empty means every namespace.
	Namespaces []string
	// DefaultAccount is the account of a namespace without the label: what an account change
	// is measured against (a label added that names the default account moves nothing).
	DefaultAccount string
	// ResyncPeriod re-delivers cached objects to the handlers; zero turns it off.
	ResyncPeriod time.Duration
	// Logger receives informer start, sync and failure messages. Nil discards.
	Logger *slog.Logger
	// Registerer receives nats_callout_namespace_informer_synced. Nil leaves it unregistered.
	Registerer prometheus.Registerer
	// OnRevocation, if set, is told when a namespace's effective account changes
	// (RevokeAccountMoved): its live connections are in the account it left. Nil: nobody is told.
	OnRevocation RevocationSink
}

// NamespaceCache is a metadata-only cache of Namespaces, read for their nats.io/account label.
// Objects from the cache are never modified.
type NamespaceCache struct {
	// informerGroup runs the informers (Run, WaitSynced, HasSynced), holds them by the
	// Namespace each lists ("" = all) and carries the logger.
	informerGroup
	def     string
	revoke  RevocationSink
	failing atomic.Bool
}

// NewNamespaceCache builds the informers (without starting them: see Run).
func NewNamespaceCache(client metadata.Interface, cfg NamespaceConfig) (*NamespaceCache, error) {
	if client == nil {
		return nil, errors.New("kube: kubernetes client is required")
	}
	if cfg.ResyncPeriod < 0 {
		return nil, fmt.Errorf("kube: negative resync period %s", cfg.ResyncPeriod)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &NamespaceCache{
		def: cfg.DefaultAccount, revoke: cfg.OnRevocation,
		informerGroup: informerGroup{kind: "namespace", log: logger, syncGauge: promauto.With(cfg.Registerer).NewGauge(prometheus.GaugeOpts{
			Name: "nats_callout_namespace_informer_synced",
			Help: "1 when the Namespace informer cache (nats.io/account labels) has synced, else 0.",
		})},
	}
	names := slices.Clone(cfg.Namespaces)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		names = []string{""}
	}
	for _, name := range names {
		inf, synced, err := c.newInformer(client, name, cfg.ResyncPeriod)
		if err != nil {
			return nil, fmt.Errorf("kube: namespace informer: %w", err)
		}
		c.add(name, inf, synced)
	}
	return c, nil
}

// newInformer makes the metadata-only informer of one namespace ("" = all of them).
func (c *NamespaceCache) newInformer(client metadata.Interface, name string, resync time.Duration) (cache.SharedIndexInformer, cache.InformerSynced, error) {
	api := client.Resource(NamespacesResource)
	only := func(opts *metav1.ListOptions) {
		if name != "" {
			opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}
	}
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			only(&opts)
			l, err := api.List(ctx, opts)
			c.apiResult(ctx, err)
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			only(&opts)
			w, err := api.Watch(ctx, opts)
			c.apiResult(ctx, err)
			return w, err
		},
	}, client)
	inf := cache.NewSharedIndexInformerWithOptions(lw, &metav1.PartialObjectMetadata{}, cache.SharedIndexInformerOptions{
		ResyncPeriod: resync, ObjectDescription: "namespaces",
	})
	if err := inf.SetTransform(trimNamespace); err != nil {
		return nil, nil, err
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		if !errors.Is(err, io.EOF) {
			c.log.DebugContext(ctx, "namespace watch ended; the informer re-lists", "error", err)
		}
	}); err != nil {
		return nil, nil, err
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, cur any) { c.moved(old, cur) },
	})
	if err != nil {
		return nil, nil, err
	}
	return inf, reg.HasSynced, nil
}

// moved emits RevokeAccountMoved when a namespace's effective account changed.
func (c *NamespaceCache) moved(old, cur any) {
	o, ok1 := old.(*metav1.PartialObjectMetadata)
	n, ok2 := cur.(*metav1.PartialObjectMetadata)
	if !ok1 || !ok2 || c.effective(o) == c.effective(n) {
		return
	}
	c.log.Info("namespace moved to another NATS account; its live connections keep the old one until they log in again",
		"namespace", n.Name, "from", c.effective(o), "to", c.effective(n))
	if c.revoke != nil {
		c.revoke(Revocation{Reason: RevokeAccountMoved, Namespace: n.Name, Account: c.effective(n)})
	}
}

func (c *NamespaceCache) effective(ns *metav1.PartialObjectMetadata) string {
	if v, ok := ns.Labels[LabelAccount]; ok {
		return v
	}
	return c.def
}

// apiResult logs the first failed list or watch call and the first success after failures;
// decisions keep using the cache meanwhile.
func (c *NamespaceCache) apiResult(ctx context.Context, err error) {
	switch {
	case err == nil:
		if c.failing.Swap(false) {
			c.log.InfoContext(ctx, "namespace list/watch works again")
		}
	case ctx.Err() != nil:
	case !c.failing.Swap(true):
		c.log.WarnContext(ctx, "namespace list/watch failed; choosing accounts from the cache until the API server answers", "error", err)
	}
}

// trimNamespace keeps only what the account choice reads: name, labels, uid, resourceVersion.
func trimNamespace(obj any) (any, error) {
	ns, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	trimmed := metav1.PartialObjectMetadata{TypeMeta: ns.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: ns.Name, UID: ns.UID, ResourceVersion: ns.ResourceVersion, Labels: ns.Labels,
	}}
	return &trimmed, nil
}

// Label returns the nats.io/account label of namespace name and whether it has one. A
// namespace not in the cache gives ErrNotSynced: before the first list has finished its label
// is not known yet, and after it the namespace is either not watched or its event has not
// arrived; either way no account can be chosen safely, and the default account would be wrong
// for a labelled one.
func (c *NamespaceCache) Label(name string) (string, bool, error) {
	if inf, ok := c.informerFor(name); ok {
		obj, exists, err := inf.GetIndexer().GetByKey(name)
		if err != nil {
			return "", false, fmt.Errorf("look up namespace %s: %w", name, err)
		}
		if exists {
			ns, ok := obj.(*metav1.PartialObjectMetadata)
			if !ok {
				return "", false, fmt.Errorf("look up namespace %s: cache holds %T", name, obj)
			}
			v, ok := ns.Labels[LabelAccount]
			return v, ok, nil
		}
	}
	if !c.HasSynced() {
		return "", false, fmt.Errorf("%w: namespace %s not listed yet", ErrNotSynced, name)
	}
	return "", false, fmt.Errorf("%w: namespace %s not in the namespace cache", ErrNotSynced, name)
}

// LabelledAccounts lists the distinct accounts the cached namespaces' labels name, sorted.
func (c *NamespaceCache) LabelledAccounts() []string {
	seen := map[string]bool{}
	for _, inf := range c.informers {
		for _, obj := range inf.GetStore().List() {
			if ns, ok := obj.(*metav1.PartialObjectMetadata); ok {
				if v, ok := ns.Labels[LabelAccount]; ok {
					seen[v] = true
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}
