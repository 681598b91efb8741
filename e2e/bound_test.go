//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// newPod creates a pod running as ServiceAccount sa. Without a scheduler and kubelet it stays
// Pending, which is all a bound token needs. It is deleted when the test ends.
func newPod(t *testing.T, ns, name, sa string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod, err := suite.kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName:           sa,
			AutomountServiceAccountToken: ptr(false),
			Containers:                   []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("pod %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() { deletePod(t, ns, name) })
	return pod
}

// deletePod deletes a pod at once: an unscheduled pod has no kubelet to wait for.
func deletePod(t *testing.T, ns, name string) {
	t.Helper()
	err := suite.kube.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete pod %s/%s: %v", ns, name, err)
	}
	eventually(t, 15*time.Second, "pod "+ns+"/"+name+" gone", func() error {
		_, err := suite.kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%w)", err)
	})
}

// setPodIPs writes status.podIP and status.podIPs through the status subresource, as the
// kubelet does once the pod's sandbox has its network.
func setPodIPs(t *testing.T, pod *corev1.Pod, ips ...string) {
	t.Helper()
	ctx := context.Background()
	cur, err := suite.kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Status.PodIP = ips[0]
	cur.Status.PodIPs = nil
	for _, ip := range ips {
		cur.Status.PodIPs = append(cur.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if _, err := suite.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pod %s/%s status: %v", pod.Namespace, pod.Name, err)
	}
}

// podToken mints a token bound to pod through the TokenRequest API, as the kubelet does for
// the pod's projected token volume.
func podToken(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	tr, err := suite.kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(context.Background(), pod.Spec.ServiceAccountName, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{
			Audiences:         []string{"nats"},
			ExpirationSeconds: ptr(int64(3600)),
			BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest bound to pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	suite.noteSecret(tr.Status.Token, "token bound to pod "+pod.Namespace+"/"+pod.Name)
	return tr.Status.Token
}

// refusedFor polls until a connection with tok is denied for reason: the pod informer sees a
// change shortly after the API server makes it.
func refusedFor(t *testing.T, d *deployment, tok, reason string) {
	t.Helper()
	eventually(t, 15*time.Second, "token refused with "+reason, func() error {
		before := d.svc.requests(t, "result", "denied", "reason", reason)
		nc, err := dial(d.nats.url(), nats.Token(tok))
		if err == nil {
			nc.Close()
			return errors.New("still allowed")
		}
		if got := d.svc.requests(t, "result", "denied", "reason", reason); got != before+1 {
			return fmt.Errorf("refused (%w), but not for %s: %s", err, reason, d.svc.metrics(t).requestsString())
		}
		return nil
	})
	if want := `"reason":"` + reason + `"`; !strings.Contains(d.svc.p.log(), want) {
		t.Errorf("the decision log has no line with %s", want)
	}
}

// A token bound to a pod logs in while its pod exists, and is refused once the pod is deleted
// (pod_not_found) or replaced by one of the same name (pod_uid_mismatch), as TokenReview
// would refuse it.
func TestBoundPod(t *testing.T) {
	d := newDeployment(t, deployOpts{})
	ns := newNamespace(t, "bound-pod")
	newServiceAccount(t, ns, "app", nil)
	pod := newPod(t, ns, "web-0", "app")
	tok := podToken(t, pod)

	nc := connectWhenKnown(t, d.nats.url(), tok)
	// nats-server names the connection's user after the user JWT's name.
	conns, err := d.nats.connz()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("system:serviceaccount:%s:app uid=", ns)
	wantPod := fmt.Sprintf(" pod=web-0 pod-uid=%s", pod.UID)
	found := false
	for _, c := range conns {
		found = found || strings.HasPrefix(c.AuthorizedUser, want) && strings.HasSuffix(c.AuthorizedUser, wantPod)
	}
	if !found {
		t.Errorf("connz: no connection with authorized_user %s...%s in %+v", want, wantPod, conns)
	}
	nc.Close()

	deletePod(t, ns, pod.Name)
	refusedFor(t, d, tok, "pod_not_found")

	again := newPod(t, ns, pod.Name, "app")
	if again.UID == pod.UID {
		t.Fatalf("recreated pod has the old uid %s", pod.UID)
	}
	refusedFor(t, d, tok, "pod_uid_mismatch")
	// The new pod's own token logs in.
	connectWhenKnown(t, d.nats.url(), podToken(t, again)).Close()
}

// With BIND_SOURCE_IP a token logs in only from its bound pod's IPs: a pod whose IP is the
// client's (127.0.0.1) logs in, the token of one whose IP is elsewhere (10.9.9.9) is refused,
// and so is a token without a pod IP.
func TestBindSourceIP(t *testing.T) {
	d := newDeployment(t, deployOpts{serviceEnv: []string{"BIND_SOURCE_IP=true"}})
	ns := newNamespace(t, "bound-ip")
	newServiceAccount(t, ns, "app", nil)
	local := newPod(t, ns, "local", "app")
	setPodIPs(t, local, "127.0.0.1")
	remote := newPod(t, ns, "remote", "app")
	setPodIPs(t, remote, "10.9.9.9")
	pending := newPod(t, ns, "pending", "app")

	connectWhenKnown(t, d.nats.url(), podToken(t, local)).Close()

	// nats-server 2.15 does not check the sources of a user JWT that an auth callout issued:
	// the service compares the client's address in the request with the pod's IPs itself.
	wantRefused(t, d, "source_ip_mismatch", nats.Token(podToken(t, remote)))
	wantRefused(t, d, "pod_no_ip", nats.Token(podToken(t, pending)))
	wantRefused(t, d, "pod_no_ip", nats.Token(token(t, ns, "app")))
}
