package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
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
	// Accounts, if set, chooses each namespace's NATS account (Policy.Account); nil leaves
	// Policy.Account empty: the caller's one account.
	Accounts *Accounts
	// AccountDefaults are the complete defaults of the accounts that have their own (see
	// ParseAccountDefaults); the others use Defaults.
	AccountDefaults map[string]PolicyDefaults
	// OnRevocation, if set, is told when a ServiceAccount's live connections lose their grant
	// (deleted, recreated, or its annotations narrowed). Nil: nobody is told.
	OnRevocation RevocationSink
}

// ServiceAccount is what the service reads of a ServiceAccount: its metadata (name, namespace,
// uid, annotations, deletion timestamp). The Store lists and watches only that, through the
// API server's metadata-only (PartialObjectMetadata) responses, so neither the cache nor the
// binary carries the rest of the object.
type ServiceAccount = metav1.PartialObjectMetadata

// ServiceAccountsResource is the resource the Store lists and watches.
var ServiceAccountsResource = schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}

// Store answers "which permissions does this ServiceAccount have" from a shared-informer cache
// of ServiceAccounts. It only reads; objects from the cache are never modified.
type Store struct {
	// informerGroup runs the informers (Run, WaitSynced, HasSynced) and holds them by
	// namespace ("" = cluster-wide); it also carries the logger.
	informerGroup
	defaults  PolicyDefaults
	accounts  *Accounts
	byAccount map[string]PolicyDefaults
	count     prometheus.Gauge
	watchErrs prometheus.Counter
	// failingSince is when list/watch calls started failing, nil while they work.
	failingSince  atomic.Pointer[time.Time]
	lastOutageLog atomic.Int64
	policies      policyMemo
	onRevocation  RevocationSink
}

// NewStore builds the informers (without starting them: see Run) and validates the config.
// client is a metadata client: metadata.NewForConfig for a cluster, MemoryCluster.Client in dev
// mode and tests.
func NewStore(client metadata.Interface, cfg StoreConfig) (*Store, error) {
	if client == nil {
		return nil, errors.New("kube: kubernetes client is required")
	}
	if cfg.ResyncPeriod < 0 {
		return nil, fmt.Errorf("kube: negative resync period %s", cfg.ResyncPeriod)
	}
	if err := cfg.Defaults.Validate(); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	for acc, d := range cfg.AccountDefaults {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("kube: defaults of account %s: %w", acc, err)
		}
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
		defaults:     cfg.Defaults,
		accounts:     cfg.Accounts,
		byAccount:    cfg.AccountDefaults,
		onRevocation: cfg.OnRevocation,
		count: factory.NewGauge(prometheus.GaugeOpts{
			Name: "nats_callout_serviceaccounts",
			Help: "ServiceAccounts in the informer cache.",
		}),
		informerGroup: informerGroup{kind: "serviceaccount", log: logger, syncGauge: factory.NewGauge(prometheus.GaugeOpts{
			Name: "nats_callout_informer_synced",
			Help: "1 when the ServiceAccount informer cache has synced, else 0.",
		})},
		watchErrs: factory.NewCounter(prometheus.CounterOpts{
			Name: "nats_callout_informer_watch_errors_total",
			Help: "Failed ServiceAccount list and watch calls to the API server; decisions use the cache meanwhile.",
		}),
	}
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	for _, ns := range namespaces {
		inf, synced, err := s.newInformer(client, ns, cfg.ResyncPeriod)
		if err != nil {
			return nil, fmt.Errorf("kube: serviceaccount informer: %w", err)
		}
		// The handler registration is synced once the informer is and the handler has seen
		// the initial list, so the count gauge is right by then too.
		s.add(ns, inf, synced)
	}
	return s, nil
}

// newInformer makes the metadata-only ServiceAccount informer of one namespace (or all): it
// reports API results, keeps only what a decision reads, counts the cache and forgets a
// ServiceAccount's parsed policy when it changes or goes.
func (s *Store) newInformer(client metadata.Interface, ns string, resync time.Duration) (cache.SharedIndexInformer, cache.InformerSynced, error) {
	api := client.Resource(ServiceAccountsResource).Namespace(ns)
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			l, err := api.List(ctx, opts)
			s.apiResult(ctx, ns, err)
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := api.Watch(ctx, opts)
			s.apiResult(ctx, ns, err)
			return w, err
		},
	}, client)
	inf := cache.NewSharedIndexInformerWithOptions(lw, &ServiceAccount{}, cache.SharedIndexInformerOptions{
		ResyncPeriod:      resync,
		ObjectDescription: "serviceaccounts",
	})
	if err := inf.SetTransform(trimServiceAccount); err != nil {
		return nil, nil, err
	}
	if err := inf.SetWatchErrorHandlerWithContext(s.watchError(ns)); err != nil {
		return nil, nil, err
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.count.Inc() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*cachedObject)
			c, ok2 := cur.(*cachedObject)
			if ok1 && ok2 && o.ResourceVersion != c.ResourceVersion {
				s.policies.forget(o.UID)
				s.revokeUpdated(o, c)
			}
		},
		DeleteFunc: func(obj any) {
			s.count.Dec()
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if o, ok := obj.(*cachedObject); ok {
				s.policies.forget(o.UID)
				s.revokeDeleted(o)
			}
		},
	})
	if err != nil {
		return nil, nil, err
	}
	return inf, reg.HasSynced, nil
}

// apiOutageReminder is how often a continuing list/watch failure is logged again.
const apiOutageReminder = time.Minute

// apiResult records the outcome of one list or watch call of the informers. The informer
// retries failures with backoff by itself (connection-refused ones silently) and decisions
// keep using the cache meanwhile, so this is what makes an API server outage, or RBAC that
// forbids the list, visible: every failure is counted, the first one and then one a minute
// is logged, and the first success after failures says so.
func (s *Store) apiResult(ctx context.Context, ns string, err error) {
	scope := ns
	if scope == "" {
		scope = "all namespaces"
	}
	if err == nil {
		if s.failingSince.Swap(nil) != nil {
			s.log.InfoContext(ctx, "serviceaccount list/watch works again", "namespaces", scope)
		}
		return
	}
	if ctx.Err() != nil {
		return // stopping
	}
	s.watchErrs.Inc()
	now := time.Now()
	since := s.failingSince.Load()
	if since == nil {
		s.failingSince.CompareAndSwap(nil, &now)
		s.lastOutageLog.Store(now.UnixNano())
		s.log.WarnContext(ctx, "serviceaccount list/watch failed; deciding from the cache until the API server answers",
			"namespaces", scope, "error", err)
		return
	}
	last := s.lastOutageLog.Load()
	if now.UnixNano()-last >= int64(apiOutageReminder) && s.lastOutageLog.CompareAndSwap(last, now.UnixNano()) {
		s.log.WarnContext(ctx, "serviceaccount list/watch still failing; deciding from the cache",
			"namespaces", scope, "since", since.UTC().Format(time.RFC3339), "error", err)
	}
}

// watchError handles what the informer reports itself: the failures apiResult has logged
// already, and watches ended by the API server (expired resource versions, closed streams),
// after which the informer re-lists. Only worth a debug line.
func (s *Store) watchError(ns string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, _ *cache.Reflector, err error) {
		if !errors.Is(err, io.EOF) {
			s.log.DebugContext(ctx, "serviceaccount watch ended; the informer re-lists", "namespace", ns, "error", err)
		}
	}
}

// Policy checks that the ServiceAccount named by id exists in the cache, is not being deleted,
// and has the uid the token was issued for; then chooses its account from its namespace (see
// Accounts.Choose) and gives the permissions its annotations grant with that account's defaults
// (see ParsePolicy). Those are parsed once per version of the ServiceAccount (its uid and
// resourceVersion) and account, and remembered (see policyMemo); the checks run on every call.
// The Policy returned may be shared with other callers: read only. Before the cache has
// synced, a ServiceAccount not (yet) in it gives ErrNotSynced rather than
// ErrServiceAccountNotFound.
func (s *Store) Policy(id Identity) (Policy, error) {
	inf, sa, err := s.lookup(id.Namespace, id.Name)
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
	var choice AccountChoice
	if s.accounts != nil {
		if choice, err = s.accounts.Choose(sa.Namespace); err != nil {
			return Policy{}, err
		}
	}
	if p, ok, err := s.policies.get(sa, choice.Account); ok {
		p.AccountWhy = choice.Why
		return p, err
	}
	p, err := ParsePolicy(s.defaultsOf(choice.Account), sa.Namespace, sa.Name, sa.annotationMap())
	p.Account, p.AccountWhy = choice.Account, choice.Why
	// Remembered only while sa is still the cached version, checked under the memo's lock: the
	// informer updates its cache before it tells the handlers that forget, so a version replaced
	// meanwhile is either not stored or forgotten right after.
	s.policies.put(sa, choice.Account, p, err, func() bool {
		cur, exists, _ := inf.GetIndexer().GetByKey(sa.Namespace + "/" + sa.Name)
		return exists && cur == any(sa)
	})
	return p, err
}

// defaultsOf are the policy defaults of account: its own (ACCOUNT_DEFAULTS) or the store's.
func (s *Store) defaultsOf(account string) PolicyDefaults {
	if d, ok := s.byAccount[account]; ok {
		return d
	}
	return s.defaults
}

// lookup finds a ServiceAccount in the cache, and the informer that holds it. The object is
// shared with the informer: read only.
func (s *Store) lookup(namespace, name string) (cache.SharedIndexInformer, *cachedObject, error) {
	inf, ok := s.informerFor(namespace)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s/%s: namespace not watched", ErrServiceAccountNotFound, namespace, name)
	}
	if namespace == "" || name == "" {
		return nil, nil, fmt.Errorf("%w: empty namespace or name", ErrServiceAccountNotFound)
	}
	obj, exists, err := inf.GetIndexer().GetByKey(namespace + "/" + name)
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("look up serviceaccount %s/%s: %w", namespace, name, err)
	case !exists && !s.HasSynced():
		return nil, nil, fmt.Errorf("%w: %s/%s not found yet", ErrNotSynced, namespace, name)
	case !exists:
		return nil, nil, fmt.Errorf("%w: %s/%s", ErrServiceAccountNotFound, namespace, name)
	}
	sa, ok := obj.(*cachedObject)
	if !ok {
		return nil, nil, fmt.Errorf("look up serviceaccount %s/%s: cache holds %T", namespace, name, obj)
	}
	return inf, sa, nil
}
