package kube

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/cache"
)

// informerGroup runs the informers of one cache (one per watched namespace, or one for all) as
// a unit: Run starts them together and stops them together, and the group has synced when every
// one of them has. The ServiceAccount store, the pod cache and the Namespace cache are each one.
type informerGroup struct {
	// kind names the objects in log lines and errors: "serviceaccount", "pod", "namespace".
	kind string
	// informers are the group's, by the namespace each watches ("" = all; for the Namespace
	// cache, the one Namespace each lists).
	informers map[string]cache.SharedIndexInformer
	synced    []cache.InformerSynced
	// syncGauge is 1 while the group is synced and running.
	syncGauge prometheus.Gauge
	log       *slog.Logger
	// syncedAttrs, if set, adds attributes to the "synced" log line.
	syncedAttrs func() []any
	started     atomic.Bool
}

// add makes inf, the informer of namespace ns, one of the group's; synced says when it has
// delivered its initial list (the handler registration's HasSynced, so that handlers have seen
// it too).
func (g *informerGroup) add(ns string, inf cache.SharedIndexInformer, synced cache.InformerSynced) {
	if g.informers == nil {
		g.informers = map[string]cache.SharedIndexInformer{}
	}
	g.informers[ns] = inf
	g.synced = append(g.synced, synced)
}

// informerFor is the informer that holds the objects of namespace ns (for the Namespace cache:
// the Namespace ns itself): the cluster-wide one, else ns's own; false when ns is not watched.
func (g *informerGroup) informerFor(ns string) (cache.SharedIndexInformer, bool) {
	if inf, ok := g.informers[""]; ok {
		return inf, true
	}
	inf, ok := g.informers[ns]
	return inf, ok
}

// Run starts the informers, waits for their caches to sync, and blocks until ctx is done; then
// it stops them and waits for their goroutines. It returns nil after a normal shutdown and may
// be called once.
func (g *informerGroup) Run(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("kube: " + g.kind + " informers already running")
	}
	defer g.syncGauge.Set(0)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, inf := range g.informers {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	g.log.InfoContext(ctx, g.kind+" informer started", "informers", len(g.informers))
	if cache.WaitForCacheSync(ctx.Done(), g.synced...) {
		g.syncGauge.Set(1)
		var attrs []any
		if g.syncedAttrs != nil {
			attrs = g.syncedAttrs()
		}
		g.log.InfoContext(ctx, g.kind+" informer synced", attrs...)
	}
	<-ctx.Done()
	return nil
}

// WaitSynced blocks until every informer has completed its initial list (true) or ctx is done
// (false).
func (g *informerGroup) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), g.synced...)
}

// HasSynced reports whether every informer has completed its initial list.
func (g *informerGroup) HasSynced() bool {
	for _, synced := range g.synced {
		if !synced() {
			return false
		}
	}
	return true
}
