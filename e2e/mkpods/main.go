// Command mkpods creates N pods named web-1 ... web-N, and ServiceAccount app, in namespace NS
// (created if missing) with W concurrent requests, through the API server of $KUBECONFIG. Each
// pod carries the metadata a Deployment's pods have (labels, an annotation, a controller owner
// reference); without a scheduler and kubelet they stay Pending. It fills the control plane of
// scripts/cluster-up.sh for measuring the pod cache (see docs/bound-tokens.md#memory):
//
//	KUBECONFIG=DIR/kubeconfig go run ./e2e/mkpods load 50000 16
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: mkpods NAMESPACE COUNT WORKERS")
		os.Exit(2)
	}
	ns, n, w := os.Args[1], atoi(os.Args[2]), atoi(os.Args[3])
	rc, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		panic(err)
	}
	rc.QPS, rc.Burst = 5000, 5000
	cs := kubernetes.NewForConfigOrDie(rc)
	ctx := context.Background()
	_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	_, _ = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{})
	var next, done atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range w {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{
						Name:            fmt.Sprintf("web-%d", i),
						Labels:          map[string]string{"app.kubernetes.io/name": "web", "pod-template-hash": "7d9f8c6b5"},
						Annotations:     map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z"},
						OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8c6b5", UID: "0e7c7a1e-2f3b-4c5d-8e9f-0a1b2c3d4e5f", Controller: ptr(true)}},
					},
					Spec: corev1.PodSpec{ServiceAccountName: "app", AutomountServiceAccountToken: ptr(false),
						Containers: []corev1.Container{{Name: "app", Image: "registry.example/web:1.2.3"}}},
				}
				for {
					_, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
					if err == nil {
						break
					}
					fmt.Fprintln(os.Stderr, "retry:", err)
					time.Sleep(time.Second)
				}
				if d := done.Add(1); d%5000 == 0 {
					fmt.Printf("%d pods in %s\n", d, time.Since(start).Round(time.Second))
				}
			}
		})
	}
	wg.Wait()
	fmt.Printf("%d pods in %s\n", n, time.Since(start).Round(time.Second))
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		fmt.Fprintf(os.Stderr, "mkpods: %q is not a positive number\n", s)
		os.Exit(2)
	}
	return n
}
func ptr[T any](v T) *T { return &v }
