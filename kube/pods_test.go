package kube_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// podRevocations collects what a RevocationSink is told.
type podRevocations struct {
	mu  sync.Mutex
	got []kube.Revocation
}

func (r *podRevocations) sink(rev kube.Revocation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, rev)
}

func (r *podRevocations) has(want kube.Revocation) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.got, want)
}

// startPods runs a PodCache over the cluster until the test ends and waits for it to sync.
func startPods(t *testing.T, cluster *kubefake.MemoryCluster, cfg kube.PodCacheConfig) (*kube.PodCache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	c, err := kube.NewPodCache(cluster.Client(), cfg)
	if err != nil {
		t.Fatalf("NewPodCache: %v", err)
	}
	testsupport.RunUntilCleanup(t, c.Run)
	testsupport.WaitFor(t, "pod informer sync", 10*time.Second, c.HasSynced)
	return c, reg
}

func podIdentity(ns, pod, uid string) kube.Identity {
	return kube.Identity{Namespace: ns, Name: "app", UID: "sa-uid", PodName: pod, PodUID: uid}
}

func TestPodCacheCheck(t *testing.T) {
	ctx := context.Background()
	cluster := memoryCluster(t)
	web, err := cluster.CreatePod(ctx, "shop", "web-0", "", "10.0.0.7")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.CreatePod(ctx, "other", "web-0", "uid-other"); err != nil {
		t.Fatal(err)
	}
	var revoked podRevocations
	c, reg := startPods(t, cluster, kube.PodCacheConfig{OnRevocation: revoked.sink})
	now := time.Now()
	webUID := string(web.UID)

	tests := []struct {
		name string
		id   kube.Identity
		want error
	}{
		{"bound to its pod", podIdentity("shop", "web-0", webUID), nil},
		{"bound to no pod", kube.Identity{Namespace: "shop", Name: "app", UID: "sa-uid"}, nil},
		{"another pod's uid", podIdentity("shop", "web-0", "uid-other"), kube.ErrPodUIDMismatch},
		{"no such pod", podIdentity("shop", "web-1", webUID), kube.ErrPodNotFound},
		{"pod of that name in another namespace", podIdentity("other", "web-0", webUID), kube.ErrPodUIDMismatch},
		{"uid without a name", podIdentity("shop", "", webUID), kube.ErrPodNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Check(tt.id, now)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("Check = %v, want %v", err, tt.want)
			}
		})
	}
	if got := testsupport.Metric(t, reg, "nats_callout_pods"); got != 2 {
		t.Errorf("nats_callout_pods = %v, want 2", got)
	}

	// Terminating: still allowed until the end of its grace period, refused after it.
	end := metav1.NewTime(now.Add(30 * time.Second).Truncate(time.Second))
	if err := cluster.MarkPodDeleting(ctx, "shop", "web-0", end); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "deletion timestamp seen", 10*time.Second, func() bool {
		return c.Check(podIdentity("shop", "web-0", webUID), end.Add(time.Second)) != nil
	})
	if err := c.Check(podIdentity("shop", "web-0", webUID), end.Add(-time.Second)); err != nil {
		t.Errorf("terminating pod before its grace period ends: %v, want allowed", err)
	}
	if err := c.Check(podIdentity("shop", "web-0", webUID), end.Time); !errors.Is(err, kube.ErrPodNotFound) {
		t.Errorf("terminating pod at the end of its grace period: %v, want %v", err, kube.ErrPodNotFound)
	}

	// Deleted, then recreated under the same name: the old token is refused either way.
	if err := cluster.DeletePod(ctx, "shop", "web-0"); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "deletion seen", 10*time.Second, func() bool {
		return errors.Is(c.Check(podIdentity("shop", "web-0", webUID), now), kube.ErrPodNotFound)
	})
	if want := (kube.Revocation{Reason: kube.RevokePodDeleted, Namespace: "shop", PodUID: webUID}); !revoked.has(want) {
		t.Errorf("podRevocations %+v, want %+v among them", revoked.got, want)
	}
	again, err := cluster.CreatePod(ctx, "shop", "web-0", "")
	if err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "recreation seen", 10*time.Second, func() bool {
		return c.Check(podIdentity("shop", "web-0", string(again.UID)), now) == nil
	})
	if err := c.Check(podIdentity("shop", "web-0", webUID), now); !errors.Is(err, kube.ErrPodUIDMismatch) {
		t.Errorf("old token after recreation: %v, want %v", err, kube.ErrPodUIDMismatch)
	}
}

func TestPodCacheNamespaces(t *testing.T) {
	ctx := context.Background()
	cluster := memoryCluster(t)
	a, err := cluster.CreatePod(ctx, "team-a", "p", "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := cluster.CreatePod(ctx, "team-b", "p", "")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := startPods(t, cluster, kube.PodCacheConfig{Namespaces: []string{"team-a"}})
	if err := c.Check(podIdentity("team-a", "p", string(a.UID)), time.Now()); err != nil {
		t.Errorf("watched namespace: %v", err)
	}
	if err := c.Check(podIdentity("team-b", "p", string(b.UID)), time.Now()); !errors.Is(err, kube.ErrPodNotFound) {
		t.Errorf("namespace not watched: %v, want %v", err, kube.ErrPodNotFound)
	}
	if got := c.Len(); got != 1 {
		t.Errorf("Len = %d, want 1 (team-a only)", got)
	}
}

func TestPodCacheNotSynced(t *testing.T) {
	ctx := context.Background()
	cluster := memoryCluster(t)
	p, err := cluster.CreatePod(ctx, "shop", "web-0", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := kube.NewPodCache(cluster.Client(), kube.PodCacheConfig{})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check(podIdentity("shop", "web-0", string(p.UID)), time.Now())
	if !errors.Is(err, kube.ErrNotSynced) || !errors.Is(err, kube.ErrPodsNotSynced) {
		t.Errorf("Check before sync = %v, want %v (an %v)", err, kube.ErrPodsNotSynced, kube.ErrNotSynced)
	}
	if errors.Is(err, kube.ErrPodNotFound) {
		t.Errorf("Check before sync = %v: a refusal, want the not-ready drop", err)
	}
	if _, err := kube.NewPodCache(nil, kube.PodCacheConfig{}); err == nil {
		t.Error("NewPodCache(nil client) succeeded")
	}
}

// BenchmarkPodCache is one login's bound-pod check in a cache of 50,000 pods, and reports
// what the cache holds per pod (heap after the initial list, garbage collected).
func BenchmarkPodCache(b *testing.B) {
	const n = 50000
	m, err := kubefake.NewMemoryCluster()
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close() // after the cache has stopped
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ids := make([]kube.Identity, n)
	for i := range ids {
		p, err := m.CreatePod(ctx, fmt.Sprintf("team-%d", i%100), fmt.Sprintf("web-7d9f8c6b5-%05d", i), "")
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = podIdentity(p.Namespace, p.Name, string(p.UID))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c, err := kube.NewPodCache(m.Client(), kube.PodCacheConfig{})
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = c.Run(ctx) }()
	syncCtx, syncDone := context.WithTimeout(ctx, time.Minute)
	defer syncDone()
	if !cache.WaitForCacheSync(syncCtx.Done(), c.HasSynced) {
		b.Fatal("the pod cache did not sync within a minute")
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perPod := float64(after.HeapAlloc-before.HeapAlloc) / n
	now, i := time.Now(), 0
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Check(ids[i%n], now); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(perPod, "heap-B/pod")
}
