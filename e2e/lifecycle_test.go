//go:build e2e

package e2e

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
)

// Scenario 4: `kubectl annotate` changes what the next connection may do.
func TestAnnotationChange(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, deployOpts{})
	ns := newNamespace(t, "annotate")
	newServiceAccount(t, ns, "app", map[string]string{"nats.io/allowed-pub-subjects": "metrics.old"})
	tok := token(t, ns, "app")
	url := d.nats.url()
	connectWhenKnown(t, url, tok).Close()

	if err := tryPublish(t, url, tok, "metrics.old", "x"); err != nil {
		t.Fatalf("publish metrics.old before the change: %v", err)
	}
	wantViolation(t, tryPublish(t, url, tok, "metrics.new", "x"), "publish before the change", "metrics.new")
	established := connect(t, url, tok)

	kubectl(t, "-n", ns, "annotate", "--overwrite", "serviceaccount/app", "nats.io/allowed-pub-subjects=metrics.new")
	eventually(t, 15*time.Second, "the new annotation applies to new connections", func() error {
		return tryPublish(t, url, tok, "metrics.new", "x")
	})
	wantViolation(t, tryPublish(t, url, tok, "metrics.old", "x"), "publish after the change", "metrics.old")

	// A connection keeps the permissions it was given until it reconnects (or its user JWT
	// expires): the change reaches it at its next callout.
	if err := established.Publish("metrics.old", nil); err != nil {
		t.Fatal(err)
	}
	if err := flushErr(established); err != nil {
		t.Errorf("connection made before the change lost its permissions: %v", err)
	}

	kubectl(t, "-n", ns, "annotate", "serviceaccount/app", "nats.io/denied-pub-subjects=annotate.secret.>")
	eventually(t, 15*time.Second, "the deny annotation applies", func() error {
		if tryPublish(t, url, tok, "annotate.secret.x", "x") == nil {
			return errors.New("still allowed")
		}
		return nil
	})
	if err := tryPublish(t, url, tok, "annotate.public", "x"); err != nil {
		t.Errorf("the namespace default was lost: %v", err)
	}

	// An invalid deny entry refuses the connection rather than widen it.
	kubectl(t, "-n", ns, "annotate", "--overwrite", "serviceaccount/app", "nats.io/denied-pub-subjects=annotate..broken")
	refusedEventually(t, d, tok)
	wantRefused(t, d, "invalid_policy", nats.Token(tok))
}

// expiry is what a client saw when the server closed its connection.
type expiry struct {
	at  time.Time
	err error
}

// watchExpiry connects with handlers that report the authentication-expired error.
func watchExpiry(url, tok string, opts ...nats.Option) (*nats.Conn, <-chan expiry, error) {
	ch := make(chan expiry, 16)
	nc, err := dial(url, append([]nats.Option{
		nats.Token(tok),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			ch <- expiry{time.Now(), err}
		}),
	}, opts...)...)
	return nc, ch, err
}

func waitExpired(t *testing.T, ch <-chan expiry, within time.Duration) time.Time {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case e := <-ch:
			if errors.Is(e.err, nats.ErrAuthExpired) {
				return e.at
			}
			t.Logf("connection error: %v", e.err)
		case <-timeout:
			t.Fatalf("the server did not close the connection as expired within %s", within)
		}
	}
}

// Scenario 5: the user JWT never outlives the token; the server closes the connection when it
// expires.
func TestTokenLifetime(t *testing.T) {
	t.Parallel()
	t.Run("short-lived token", func(t *testing.T) {
		t.Parallel()
		// The TokenRequest API does not issue tokens under 10 minutes, so this one is forged
		// with the cluster's own signing key: a real-key token that expires in a few seconds.
		d := newDeployment(t, deployOpts{})
		ns := newNamespace(t, "lifetime")
		sa := newServiceAccount(t, ns, "brief", nil)
		url := d.nats.url()
		connectWhenKnown(t, url, token(t, ns, "brief")).Close()

		claims := realisticClaims(sa, time.Hour)
		exp := time.Now().Add(6 * time.Second).Truncate(time.Second)
		claims.ExpiresAt = jwt.NewNumericDate(exp)
		tok := forge(t, claims, nil)

		nc, expired, err := watchExpiry(url, tok)
		if err != nil {
			t.Fatalf("connect with a token valid for 6 more seconds: %v", err)
		}
		defer nc.Close()
		if err := nc.Publish("lifetime.x", nil); err != nil {
			t.Fatal(err)
		}
		if err := flushErr(nc); err != nil {
			t.Fatal(err)
		}
		at := waitExpired(t, expired, 20*time.Second)
		if at.Before(exp.Add(-time.Second)) || at.After(exp.Add(5*time.Second)) {
			t.Errorf("closed as expired at %s, token exp %s: want it at the token's expiry", at.Format(time.StampMilli), exp.Format(time.StampMilli))
		}
		eventually(t, 5*time.Second, "connection closed", func() error {
			if !nc.IsClosed() {
				return errors.New(nc.Status().String())
			}
			return nil
		})
		// Reconnecting with the expired token is refused at once, as expired: the workload
		// must read its rotated token. The verifier tolerates 30 s of clock skew, but that
		// must not let through a token whose exp has passed: its user JWT would be born
		// expired (nats-server checks the user JWT's exp with the same clock).
		wantRefused(t, d, "expired", nats.Token(tok))
	})

	t.Run("USER_JWT_MAX_TTL", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, deployOpts{serviceEnv: []string{"USER_JWT_MAX_TTL=5s"}})
		ns := newNamespace(t, "maxttl")
		newServiceAccount(t, ns, "capped", nil)
		url := d.nats.url()
		tok := token(t, ns, "capped")
		connectWhenKnown(t, url, tok).Close()

		reconnected := make(chan struct{}, 4)
		start := time.Now()
		nc, expired, err := watchExpiry(url, tok,
			nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
			nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		at := waitExpired(t, expired, 20*time.Second)
		if lived := at.Sub(start); lived < 3*time.Second || lived > 10*time.Second {
			t.Errorf("the connection lived %s with USER_JWT_MAX_TTL=5s", lived)
		}
		// The token itself is good for an hour: the client reconnects, the callout runs again
		// and issues a new short user JWT.
		select {
		case <-reconnected:
		case <-time.After(10 * time.Second):
			t.Fatal("no reconnect after the user JWT expired")
		}
		if err := nc.Publish("maxttl.x", nil); err != nil {
			t.Fatal(err)
		}
		if err := flushErr(nc); err != nil {
			t.Errorf("after reconnecting: %v", err)
		}
	})
}

// Scenario 6: encrypted callouts (auth_callout.xkey) with the real server.
func TestEncryptedCallouts(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, "xkey")
	newServiceAccount(t, ns, "sealed", nil)

	t.Run("encrypted", func(t *testing.T) {
		d := newDeployment(t, deployOpts{xkey: true})
		url := d.nats.url()
		tok := token(t, ns, "sealed")
		obs := newObserver(t, url)
		connectWhenKnown(t, url, tok).Close()
		if err := tryPublish(t, url, tok, "xkey.hello", "sealed"); err != nil {
			t.Fatal(err)
		}
		obs.next(t, "xkey.hello")
		wantViolation(t, tryPublish(t, url, tok, "other.hello", "x"), "publish", "other.hello")
		// Denials are sealed too, and still immediate.
		wantRefused(t, d, "wrong_audience", nats.Token(kubectlToken(t, ns, "sealed", "other")))
		wantRefused(t, d, "no_token")
	})

	t.Run("service without the xkey", func(t *testing.T) {
		// The server encrypts, the service has no NATS_XKEY_FILE: it cannot read requests and
		// must not answer them; it counts them as encryption mismatches.
		d := newDeployment(t, deployOpts{xkey: true, serviceWithoutXKey: true})
		before := d.svc.requests(t, "result", "dropped", "reason", "encryption_mismatch")
		nc, err := dial(d.nats.url(), nats.Token(token(t, ns, "sealed")))
		if err == nil {
			nc.Close()
			t.Fatal("connection allowed by a service that cannot read encrypted callouts")
		}
		// Unanswered, the client fails when the server's authorization timeout ends; nats.go
		// reports that as an authorization violation or as the connect handshake breaking off.
		t.Logf("connect refused: %v", err)
		if got := d.svc.requests(t, "result", "dropped", "reason", "encryption_mismatch"); got != before+1 {
			t.Errorf("dropped encryption_mismatch went from %g to %g; all: %s", before, got, d.svc.metrics(t).requestsString())
		}
	})
}
