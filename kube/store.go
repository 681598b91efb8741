package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// StoreConfig configures a Store.
type StoreConfig struct {
	// Namespaces limits the store to these namespaces (one informer each, so RBAC can be
	// namespaced too). Empty means cluster-wide.
	Namespaces []string
	// ResyncPeriod re-delivers cached objects to the store's handlers; zero turns it off, which
	// is fine for a read-only cache.
	ResyncPeriod time.Duration
	// Defaults are the subjects every ServiceAccount gets; zero value = DefaultPolicyDefaults().
	Defaults PolicyDefaults
	// Logger receives informer start and sync messages. Nil discards.
	Logger *slog.Logger
	// Registerer receives nats_callout_serviceaccounts and nats_callout_informer_synced.
	// Nil leaves the metrics unregistered.
	Registerer prometheus.Registerer
}

// Store answers "which permissions does this ServiceAccount have" from a shared-informer cache
// of ServiceAccounts. It only reads; objects from the cache are never modified.
type Store struct {
	factories []informers.SharedInformerFactory
	listers   map[string]listersv1.ServiceAccountLister // by namespace; "" = cluster-wide
	synced    []cache.InformerSynced
	defaults  PolicyDefaults
	log       *slog.Logger
	count     prometheus.Gauge
	syncGauge prometheus.Gauge
	started   atomic.Bool
}

// NewStore builds the informers (without starting them: see Run) and validates the config.
func NewStore(client kubernetes.Interface, cfg StoreConfig) (*Store, error) {
	if client == nil {
		return nil, errors.New("kube: kubernetes client is required")
	}
	if cfg.ResyncPeriod < 0 {
		return nil, fmt.Errorf("kube: negative resync period %s", cfg.ResyncPeriod)
	}
	if err := cfg.Defaults.Validate(); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	namespaces := slices.Clone(cfg.Namespaces)
	slices.Sort(namespaces)
	namespaces = slices.Compact(namespaces)
	for _, ns := range namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("kube: namespace %q: %s", ns, strings.Join(errs, "; "))
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	factory := promauto.With(cfg.Registerer)
	s := &Store{
		listers:  make(map[string]listersv1.ServiceAccountLister),
		defaults: cfg.Defaults,
		log:      logger,
		count: factory.NewGauge(prometheus.GaugeOpts{
			Name: "nats_callout_serviceaccounts",
			Help: "ServiceAccounts in the informer cache.",
		}),
		syncGauge: factory.NewGauge(prometheus.GaugeOpts{
			Name: "nats_callout_informer_synced",
			Help: "1 when the ServiceAccount informer cache has synced, else 0.",
		}),
	}
	if len(namespaces) == 0 {
		namespaces = []string{corev1.NamespaceAll}
	}
	for _, ns := range namespaces {
		f := informers.NewSharedInformerFactoryWithOptions(client, cfg.ResyncPeriod,
			informers.WithNamespace(ns), informers.WithTransform(trimServiceAccount))
		sa := f.Core().V1().ServiceAccounts()
		reg, err := sa.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.count.Inc() },
			DeleteFunc: func(any) { s.count.Dec() },
		})
		if err != nil {
			return nil, fmt.Errorf("kube: serviceaccount informer: %w", err)
		}
		s.factories = append(s.factories, f)
		s.listers[ns] = sa.Lister()
		// The handler registration is synced once the informer is and the handler has seen
		// the initial list, so the count gauge is right by then too.
		s.synced = append(s.synced, reg.HasSynced)
	}
	return s, nil
}

// trimServiceAccount drops what the store never reads to keep the cache small. It copies
// rather than mutates: the object may still be referenced by whoever decoded it.
func trimServiceAccount(obj any) (any, error) {
	sa, ok := obj.(*corev1.ServiceAccount)
	if !ok {
		return obj, nil
	}
	trimmed := *sa
	trimmed.ManagedFields = nil
	trimmed.Secrets, trimmed.ImagePullSecrets = nil, nil
	return &trimmed, nil
}

// Run starts the informers, waits for their caches to sync, and blocks until ctx is done; then
// it stops them and waits for their goroutines. It returns nil after a normal shutdown and may
// be called once.
func (s *Store) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("kube: store already running")
	}
	defer s.syncGauge.Set(0)
	for _, f := range s.factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range s.factories {
			f.Shutdown()
		}
	}()
	s.log.InfoContext(ctx, "serviceaccount informer started", "informers", len(s.factories))
	if cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		s.syncGauge.Set(1)
		s.log.InfoContext(ctx, "serviceaccount informer synced")
	}
	<-ctx.Done()
	return nil
}

// HasSynced reports whether every informer has completed its initial list.
func (s *Store) HasSynced() bool {
	for _, synced := range s.synced {
		if !synced() {
			return false
		}
	}
	return true
}

// Policy checks that the ServiceAccount named by id exists in the cache, is not being deleted,
// and has the uid the token was issued for; then parses its annotations (see ParsePolicy).
// Before the cache has synced, a ServiceAccount not (yet) in it gives ErrNotSynced rather than
// ErrServiceAccountNotFound.
func (s *Store) Policy(id Identity) (Policy, error) {
	sa, err := s.lookup(id.Namespace, id.Name)
	if err != nil {
		return Policy{}, err
	}
	switch {
	case sa.DeletionTimestamp != nil:
		return Policy{}, fmt.Errorf("%w: %s/%s since %s", ErrServiceAccountDeleting, id.Namespace, id.Name,
			sa.DeletionTimestamp.UTC().Format(time.RFC3339))
	case string(sa.UID) != id.UID:
		return Policy{}, fmt.Errorf("%w: %s/%s has uid %s, token has %q", ErrUIDMismatch, id.Namespace, id.Name, sa.UID, id.UID)
	}
	return ParsePolicy(s.defaults, sa.Namespace, sa.Name, sa.Annotations)
}

// lookup finds a ServiceAccount in the cache. The object is shared with the informer: read only.
func (s *Store) lookup(namespace, name string) (*corev1.ServiceAccount, error) {
	lister, ok := s.listers[corev1.NamespaceAll]
	if !ok {
		if lister, ok = s.listers[namespace]; !ok {
			return nil, fmt.Errorf("%w: %s/%s: namespace not watched", ErrServiceAccountNotFound, namespace, name)
		}
	}
	if namespace == "" || name == "" {
		return nil, fmt.Errorf("%w: empty namespace or name", ErrServiceAccountNotFound)
	}
	sa, err := lister.ServiceAccounts(namespace).Get(name)
	switch {
	case apierrors.IsNotFound(err) && !s.HasSynced():
		return nil, fmt.Errorf("%w: %s/%s not found yet", ErrNotSynced, namespace, name)
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%w: %s/%s", ErrServiceAccountNotFound, namespace, name)
	case err != nil:
		return nil, fmt.Errorf("look up serviceaccount %s/%s: %w", namespace, name, err)
	}
	return sa, nil
}
