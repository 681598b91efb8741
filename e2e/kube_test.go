//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func createNamespace(ctx context.Context, kube kubernetes.Interface, name string) error {
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func createServiceAccount(ctx context.Context, kube kubernetes.Interface, ns, name string, annotations map[string]string) (*corev1.ServiceAccount, error) {
	return kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
	}, metav1.CreateOptions{})
}

// requestToken mints a token with the TokenRequest API, as the kubelet does for a projected
// volume and `kubectl create token` does for a user.
func requestToken(ctx context.Context, kube kubernetes.Interface, ns, name, audience string, ttl time.Duration) (string, error) {
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr(int64(ttl / time.Second))},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s: %w", ns, name, err)
	}
	return tr.Status.Token, nil
}

// newNamespace creates a namespace (or uses the existing one). Namespaces are left in place:
// without a controller-manager a deleted namespace would stay Terminating forever, and the
// whole control plane is thrown away after the run. Tests delete their own ServiceAccounts.
func newNamespace(t *testing.T, name string) string {
	t.Helper()
	if err := createNamespace(context.Background(), suite.kube, name); err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
	return name
}

// newServiceAccount creates a ServiceAccount and deletes it when the test ends.
func newServiceAccount(t *testing.T, ns, name string, annotations map[string]string) *corev1.ServiceAccount {
	t.Helper()
	sa, err := createServiceAccount(context.Background(), suite.kube, ns, name, annotations)
	if err != nil {
		t.Fatalf("ServiceAccount %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() {
		err := suite.kube.CoreV1().ServiceAccounts(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete ServiceAccount %s/%s: %v", ns, name, err)
		}
	})
	return sa
}

// token mints a one-hour token with the nats audience through the TokenRequest API.
func token(t *testing.T, ns, name string) string {
	t.Helper()
	tok, err := requestToken(context.Background(), suite.kube, ns, name, "nats", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	suite.noteSecret(tok, "token of "+ns+"/"+name)
	return tok
}

// kubectl runs the kubectl binary with the admin kubeconfig and returns its stdout.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(suite.kubectl, append([]string{"--kubeconfig", suite.kubeconfig}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// kubectlToken is what the README tells users to run: kubectl -n NS create token SA --audience A.
func kubectlToken(t *testing.T, ns, name, audience string) string {
	t.Helper()
	tok := strings.TrimSpace(kubectl(t, "-n", ns, "create", "token", name, "--audience", audience))
	suite.noteSecret(tok, "kubectl token of "+ns+"/"+name)
	return tok
}

// forgedClaims are the claims of a ServiceAccount token as the API server writes them.
type forgedClaims struct {
	jwt.RegisteredClaims
	Kubernetes map[string]any `json:"kubernetes.io,omitempty"`
}

// realisticClaims returns the claims the API server would put in a token for sa, valid from
// now for ttl, with the nats audience.
func realisticClaims(sa *corev1.ServiceAccount, ttl time.Duration) forgedClaims {
	now := time.Now()
	return forgedClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    suite.issuer,
			Subject:   "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
			Audience:  jwt.ClaimStrings{"nats"},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        randomHex(16),
		},
		Kubernetes: map[string]any{
			"namespace":      sa.Namespace,
			"serviceaccount": map[string]any{"name": sa.Name, "uid": string(sa.UID)},
		},
	}
}

// forge signs claims with key (the cluster's own signing key unless the test says otherwise)
// and the API server's key id: RS256, exactly like the API server's own tokens.
func forge(t *testing.T, claims forgedClaims, key *rsa.PrivateKey) string {
	t.Helper()
	if key == nil {
		key = suite.saKey
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = suite.kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	suite.noteSecret(s, "forged token")
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// writeFile writes a file or fails the test.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
