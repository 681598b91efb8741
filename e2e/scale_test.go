//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestScale measures a sidecar with ten ServiceAccounts, then fills the real API server with
// many more (three annotations and a label each, spread over namespaces) and measures a new
// sidecar the same way, and prints both: the time from start to ready, its resident memory (the
// peak, once ready, after logins) and the latency of logins by the same ten ServiceAccounts.
//
//	make scale        (E2E_SCALE_SERVICEACCOUNTS=50000 scripts/e2e.sh -run '^TestScale$')
//
// In the regular suite it runs small (1,000 ServiceAccounts) and checks only that every login
// succeeds; figures come from the printed table, never from assertions.
func TestScale(t *testing.T) {
	n := envInt(t, "E2E_SCALE_SERVICEACCOUNTS", 1000)
	pods := envInt(t, "E2E_SCALE_PODS", 200)
	logins := envInt(t, "E2E_SCALE_LOGINS", 200)
	d, _ := newNATSDeployment(t, deployOpts{})
	url := d.nats.url()

	// The ServiceAccounts logins use: ten, in a namespace of their own.
	prefix := fmt.Sprintf("scale-%d", time.Now().UnixNano()%100000)
	small := newNamespace(t, prefix+"-logins")
	tokens := make([]string, 10)
	for i := range tokens {
		newServiceAccount(t, small, fmt.Sprintf("app-%d", i), map[string]string{"nats.io/allowed-pub-subjects": "shared.events"})
		tokens[i] = token(t, small, fmt.Sprintf("app-%d", i))
	}
	rows := []string{scaleRun(t, d, url, tokens, logins)}

	// One namespace per 500 ServiceAccounts, at least 2 and at most 100.
	spaces := min(max(n/500, 2), 100)
	created := fillServiceAccounts(t, prefix, spaces, n)
	t.Logf("%d ServiceAccounts in %d namespaces created in %v", n, spaces, created.Round(time.Second))
	created = fillPods(t, prefix, spaces, pods)
	t.Logf("%d pods in %d namespaces created in %v", pods, spaces, created.Round(time.Second))
	rows = append(rows, scaleRun(t, d, url, tokens, logins))

	table := fmt.Sprintf("scale: the sidecar with the login namespace's 10 ServiceAccounts, then with %d more (3 annotations, 1 label each) and %d pods in %d namespaces (VERIFY_BOUND_OBJECTS on)\n"+
		"| ServiceAccounts cached | pods cached | start to ready | RSS peak | RSS ready | RSS after %d logins | Go heap in use | login p50 | login p99 |\n"+
		"|---|---|---|---|---|---|---|---|---|\n%s\n", n, pods, spaces, logins, strings.Join(rows, "\n"))
	t.Log("\n" + table)
	fmt.Print(table)
}

// scaleRun starts a sidecar, measures it through start-up and logins, stops it, and returns
// its row of TestScale's table.
func scaleRun(t *testing.T, d *deployment, url string, tokens []string, logins int) string {
	t.Helper()
	start := time.Now()
	svc := startService(t, d.dir, fmt.Sprintf("callout-scale-%d", time.Now().UnixNano()), url, d.vol, serviceOpts{env: []string{"LOG_LEVEL=info"}})
	ready := time.Since(start)
	// Ready means synced, after which the sidecar gives the start-up list's memory back: read
	// the resident size once it has settled.
	// (within half a MiB of a reading at least 200 ms older).
	var rssReady float64
	before, beforeAt := procMemory(t, svc.p.pid(), "VmRSS"), time.Now()
	eventually(t, 10*time.Second, "resident memory settled", func() error {
		rssReady = procMemory(t, svc.p.pid(), "VmRSS")
		switch {
		case time.Since(beforeAt) < 200*time.Millisecond:
			return errors.New("too soon to tell")
		case rssReady < before-0.5 || rssReady > before+0.5:
			err := fmt.Errorf("from %.1f to %.1f MiB", before, rssReady)
			before, beforeAt = rssReady, time.Now()
			return err
		}
		return nil
	})
	connectWhenKnown(t, url, tokens[0]).Close()
	lat := scaleLogins(t, url, tokens, logins)
	rssAfter, peak := procMemory(t, svc.p.pid(), "VmRSS"), procMemory(t, svc.p.pid(), "VmHWM")
	m := svc.metrics(t)
	cached := m.sum("nats_callout_serviceaccounts")
	cachedPods := m.sum("nats_callout_pods")
	if code := svc.p.stop(t); code != 0 {
		t.Errorf("the sidecar exited with %d on SIGTERM", code)
	}
	return fmt.Sprintf("| %.0f | %.0f | %v | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %v | %v |",
		cached, cachedPods, ready.Round(10*time.Millisecond), peak, rssReady, rssAfter, m.sum("go_memstats_heap_inuse_bytes")/(1<<20),
		lat[len(lat)/2].Round(10*time.Microsecond), lat[len(lat)*99/100].Round(10*time.Microsecond))
}

// bulkClient is an admin client without client-side rate limits, for filling the API server.
func bulkClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", suite.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 5000, 5000
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return kube
}

// fillServiceAccounts creates n ServiceAccounts named app-I over namespaces PREFIX-0..spaces-1,
// many at a time, and deletes the namespaces when the test ends.
func fillServiceAccounts(t *testing.T, prefix string, spaces, n int) time.Duration {
	t.Helper()
	kube := bulkClient(t)
	ctx := context.Background()
	for i := range spaces {
		ns := fmt.Sprintf("%s-%d", prefix, i)
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	}
	return createAll(t, "ServiceAccounts", n, func(i int) error {
		ns := fmt.Sprintf("%s-%d", prefix, i%spaces)
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("app-%d", i/spaces), Namespace: ns,
			Labels: map[string]string{"app.kubernetes.io/part-of": "scale"},
			Annotations: map[string]string{
				"nats.io/allowed-pub-subjects": fmt.Sprintf("%s.orders.%d,shared.events", ns, i),
				"nats.io/allowed-sub-subjects": fmt.Sprintf("%s.replies.%d", ns, i),
				"nats.io/allow-responses":      "true",
			},
		}}
		_, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{})
		return err
	})
}

// fillPods creates n Pending pods (no kubelet runs them; as a Deployment's, with managed
// fields) named web-I over the namespaces of fillServiceAccounts, each of ServiceAccount app-0
// of its namespace; the namespaces' deletion removes them.
func fillPods(t *testing.T, prefix string, spaces, n int) time.Duration {
	t.Helper()
	kube := bulkClient(t)
	automount, controller := false, true
	return createAll(t, "pods", n, func(i int) error {
		ns := fmt.Sprintf("%s-%d", prefix, i%spaces)
		pod := &corev1.Pod{
			// What a Deployment's pods carry: labels, an annotation, an owner reference.
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%d", i/spaces), Namespace: ns,
				Labels:      map[string]string{"app.kubernetes.io/name": "web", "pod-template-hash": "7d9f8c6b5"},
				Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8c6b5",
					UID: "0e7c7a1e-2f3b-4c5d-8e9f-0a1b2c3d4e5f", Controller: &controller}}},
			Spec: corev1.PodSpec{ServiceAccountName: "app-0", AutomountServiceAccountToken: &automount,
				Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1.2.3"}}},
		}
		_, err := kube.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
		return err
	})
}

// createAll calls create(0) ... create(n-1), 32 at a time, stops the test at the first error,
// and returns how long it took.
func createAll(t *testing.T, what string, n int, create func(i int) error) time.Duration {
	t.Helper()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := create(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create %s: %v", what, err)
	}
	return time.Since(start)
}

// scaleLogins makes n sequential logins and returns their latencies, sorted.
func scaleLogins(t *testing.T, url string, tokens []string, n int) []time.Duration {
	t.Helper()
	lat := make([]time.Duration, n)
	for i := range n {
		t0 := time.Now()
		nc, err := nats.Connect(url, nats.Token(tokens[i%len(tokens)]), nats.NoReconnect(), nats.Timeout(5*time.Second))
		lat[i] = time.Since(t0)
		if err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		nc.Close()
	}
	slices.Sort(lat)
	return lat
}

// procMemory is a memory figure of the process in MiB from /proc/PID/status: VmRSS (resident
// now) or VmHWM (the most it has been resident).
func procMemory(t *testing.T, pid int, field string) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("memory of %d: %v", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, rest, err)
			}
			return kb / 1024
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}
