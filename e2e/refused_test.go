//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// authTimeout is nats-server's default authorization timeout: a callout that gets no answer
// fails the client after it. A refusal must come sooner, as a signed denial.
const authTimeout = 2 * time.Second

// wantRefused makes one connection attempt and checks that it is refused at once with an
// authorization error, and that the service denied it for reason.
func wantRefused(t *testing.T, d *deployment, reason string, opts ...nats.Option) {
	t.Helper()
	before := d.svc.requests(t, "result", "denied", "reason", reason)
	start := time.Now()
	nc, err := dial(d.nats.url(), opts...)
	took := time.Since(start)
	if err == nil {
		nc.Close()
		t.Errorf("%s: connection allowed, want it refused", reason)
		return
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("%s: %v, want an authorization violation", reason, err)
	}
	if took >= authTimeout {
		t.Errorf("%s: refused after %s, as slow as a callout that got no answer (%s)", reason, took, authTimeout)
	}
	if got := d.svc.requests(t, "result", "denied", "reason", reason); got != before+1 {
		t.Errorf("%s: denials with this reason went from %g to %g, want one more; all: %s",
			reason, before, got, d.svc.metrics(t).requestsString())
	}
}

// refusedEventually polls until a token is refused: the informer learns of a change shortly
// after the API server makes it.
func refusedEventually(t *testing.T, d *deployment, tok string) {
	t.Helper()
	eventually(t, 15*time.Second, "token refused", func() error {
		nc, err := dial(d.nats.url(), nats.Token(tok))
		if err == nil {
			nc.Close()
			return errors.New("still allowed")
		}
		return nil
	})
}

// Scenario 3: connections refused at once, with the reason in the service's metrics.
func TestRefusedAtConnect(t *testing.T) {
	d := newDeployment(t, deployOpts{})
	ns := newNamespace(t, "refused")
	url := d.nats.url()

	t.Run("no token", func(t *testing.T) {
		wantRefused(t, d, "no_token")
	})

	t.Run("not a token", func(t *testing.T) {
		wantRefused(t, d, "malformed_token", nats.Token("definitely-not-a-jwt"))
	})

	t.Run("wrong audience", func(t *testing.T) {
		newServiceAccount(t, ns, "aud", nil)
		connectWhenKnown(t, url, token(t, ns, "aud")).Close()
		// kubectl create token --audience other: a real token, for someone else.
		wantRefused(t, d, "wrong_audience", nats.Token(kubectlToken(t, ns, "aud", "other")))
		// The API server's own audience (a pod's default token) is not nats either.
		tok, err := requestToken(context.Background(), suite.kube, ns, "aud", suite.issuer, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		suite.noteSecret(tok, "API-audience token")
		wantRefused(t, d, "wrong_audience", nats.Token(tok))
	})

	t.Run("ServiceAccount deleted", func(t *testing.T) {
		newServiceAccount(t, ns, "gone", nil)
		tok := token(t, ns, "gone")
		connectWhenKnown(t, url, tok).Close()
		if err := suite.kube.CoreV1().ServiceAccounts(ns).Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		refusedEventually(t, d, tok)
		wantRefused(t, d, "serviceaccount_not_found", nats.Token(tok))
	})

	t.Run("ServiceAccount deleted and recreated", func(t *testing.T) {
		newServiceAccount(t, ns, "phoenix", nil)
		old := token(t, ns, "phoenix")
		connectWhenKnown(t, url, old).Close()
		if err := suite.kube.CoreV1().ServiceAccounts(ns).Delete(context.Background(), "phoenix", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := createServiceAccount(context.Background(), suite.kube, ns, "phoenix", nil); err != nil {
			t.Fatal(err)
		}
		// Once the new ServiceAccount's token is accepted, the cache holds the new uid.
		connectWhenKnown(t, url, token(t, ns, "phoenix")).Close()
		wantRefused(t, d, "serviceaccount_uid_mismatch", nats.Token(old))
	})

	t.Run("ServiceAccount being deleted", func(t *testing.T) {
		// A finalizer keeps the object, with its deletionTimestamp set, until it is removed.
		sa := newServiceAccount(t, ns, "lingering", nil)
		sa.Finalizers = []string{"e2e.nats-k8s-oidc-callout/hold"}
		if _, err := suite.kube.CoreV1().ServiceAccounts(ns).Update(context.Background(), sa, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			patch := []byte(`{"metadata":{"finalizers":null}}`)
			_, err := suite.kube.CoreV1().ServiceAccounts(ns).Patch(context.Background(), "lingering", types.MergePatchType, patch, metav1.PatchOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("remove the finalizer: %v", err)
			}
		})
		tok := token(t, ns, "lingering")
		connectWhenKnown(t, url, tok).Close()
		if err := suite.kube.CoreV1().ServiceAccounts(ns).Delete(context.Background(), "lingering", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		refusedEventually(t, d, tok)
		wantRefused(t, d, "serviceaccount_deleting", nats.Token(tok))
	})

	t.Run("forged with the cluster's key", func(t *testing.T) {
		sa := newServiceAccount(t, ns, "forged", nil)
		connectWhenKnown(t, url, token(t, ns, "forged")).Close()

		// The control: forged claims exactly like the API server's are accepted, so the
		// refusals below are about the one claim each changes.
		connect(t, url, forge(t, realisticClaims(sa, time.Hour), nil)).Close()

		wrongIssuer := realisticClaims(sa, time.Hour)
		wrongIssuer.Issuer = "https://kubernetes.default.svc"
		wantRefused(t, d, "wrong_issuer", nats.Token(forge(t, wrongIssuer, nil)))

		// Expired beyond the verifier's clock-skew leeway (30 s).
		expired := realisticClaims(sa, time.Hour)
		expired.IssuedAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Hour))
		expired.NotBefore = expired.IssuedAt
		expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))
		wantRefused(t, d, "expired", nats.Token(forge(t, expired, nil)))

		noExp := realisticClaims(sa, time.Hour)
		noExp.ExpiresAt = nil
		wantRefused(t, d, "bad_claims", nats.Token(forge(t, noExp, nil)))

		noKubernetes := realisticClaims(sa, time.Hour)
		noKubernetes.Kubernetes = nil
		wantRefused(t, d, "bad_claims", nats.Token(forge(t, noKubernetes, nil)))

		otherSub := realisticClaims(sa, time.Hour)
		otherSub.Subject = "system:serviceaccount:kube-system:admin"
		wantRefused(t, d, "bad_claims", nats.Token(forge(t, otherSub, nil)))

		notYet := realisticClaims(sa, time.Hour)
		notYet.NotBefore = jwt.NewNumericDate(time.Now().Add(10 * time.Minute))
		wantRefused(t, d, "not_yet_valid", nats.Token(forge(t, notYet, nil)))
	})

	t.Run("forged with another key", func(t *testing.T) {
		sa := newServiceAccount(t, ns, "impostor", nil)
		connectWhenKnown(t, url, token(t, ns, "impostor")).Close()
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		// Same kid, perfect claims, wrong key.
		wantRefused(t, d, "bad_signature", nats.Token(forge(t, realisticClaims(sa, time.Hour), other)))

		// HS256 with the cluster's public key as the HMAC secret: the classic algorithm
		// confusion.
		der, err := x509.MarshalPKIXPublicKey(&suite.saKey.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		hs := jwt.NewWithClaims(jwt.SigningMethodHS256, realisticClaims(sa, time.Hour))
		hs.Header["kid"] = suite.kid
		hsTok, err := hs.SignedString(pubPEM)
		if err != nil {
			t.Fatal(err)
		}
		suite.noteSecret(hsTok, "HS256 forged token")
		wantRefused(t, d, "bad_signature", nats.Token(hsTok))
	})
}
