package kube_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

const (
	testIssuer   = "https://kubernetes.default.svc.cluster.local"
	testAudience = "nats"
	testUID      = "6f1c1c4e-7f8a-4b8e-9a65-0d6c8f6f0a11"
)

// jwksServer is a real HTTP JWKS endpoint serving the keys of a changeable set of issuers.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	issuers []*kubefake.TokenIssuer
	status  int    // non-zero: answer with this status instead
	body    []byte // non-nil: answer with this body instead
	hits    atomic.Int64
}

func newJWKSServer(t testing.TB, issuers ...*kubefake.TokenIssuer) *jwksServer {
	t.Helper()
	s := &jwksServer{issuers: issuers}
	s.Server = httptest.NewServer(s)
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status != 0 {
		http.Error(w, "unavailable", s.status)
		return
	}
	if s.body != nil {
		_, _ = w.Write(s.body)
		return
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	for _, iss := range s.issuers {
		var one struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal(iss.JWKS(), &one); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		set.Keys = append(set.Keys, one.Keys...)
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_ = json.NewEncoder(w).Encode(set)
}

func (s *jwksServer) serve(issuers ...*kubefake.TokenIssuer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issuers, s.status, s.body = issuers, 0, nil
}

func (s *jwksServer) fail(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

// Test keys are generated once: RSA generation dominates test time otherwise.
var (
	issuersOnce sync.Once
	issuers     [4]*kubefake.TokenIssuer // [0..2] RSA, [3] ECDSA
)

func testIssuers(t testing.TB) [4]*kubefake.TokenIssuer {
	t.Helper()
	issuersOnce.Do(func() {
		for i := range 3 {
			iss, err := kubefake.NewTokenIssuer(testIssuer)
			if err != nil {
				panic(err)
			}
			issuers[i] = iss
		}
		iss, err := kubefake.NewECDSATokenIssuer(testIssuer)
		if err != nil {
			panic(err)
		}
		issuers[3] = iss
	})
	return issuers
}

type verifierOpt func(*kube.VerifierConfig)

// newTestVerifier starts a Verifier against url and stops it at cleanup.
func newTestVerifier(t testing.TB, url string, opts ...verifierOpt) (*kube.Verifier, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := kube.VerifierConfig{
		JWKSURL:    url,
		Issuer:     testIssuer,
		Audience:   testAudience,
		Registerer: reg,
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v, err := kube.NewVerifier(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-v.Done():
		case <-time.After(10 * time.Second):
			t.Error("verifier refresh loop did not stop")
		}
	})
	return v, reg
}

func waitKeys(t testing.TB, v *kube.Verifier, n int) {
	t.Helper()
	testsupport.WaitFor(t, "JWKS keys", 10*time.Second, func() bool { return v.KeyCount() == n })
}

// metricValue returns the value of an unlabelled gauge or counter in reg.
func metricValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func mustToken(t testing.TB, iss *kubefake.TokenIssuer, ns, name, uid string) string {
	t.Helper()
	tok, err := iss.ServiceAccountToken(ns, name, uid, []string{"https://kubernetes.default.svc", testAudience}, time.Hour)
	if err != nil {
		t.Fatalf("ServiceAccountToken: %v", err)
	}
	return tok
}

func mustSign(t testing.TB, iss *kubefake.TokenIssuer, c jwt.Claims) string {
	t.Helper()
	tok, err := iss.Sign(c)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return tok
}

func TestVerifyAccepts(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0], is[3])
	v, _ := newTestVerifier(t, srv.URL)
	waitKeys(t, v, 2)

	podBound := is[0].Claims("team-a", "builder.v2", testUID, []string{testAudience}, time.Hour)
	podBound.Kubernetes.Pod = &kube.ObjectRef{Name: "builder-7d9f", UID: "pod-uid-1"}
	podBound.Kubernetes.Node = &kube.ObjectRef{Name: "node-1", UID: "node-uid-1"}
	secretBound := is[0].Claims("team-a", "app", testUID, []string{testAudience}, time.Hour)
	secretBound.Kubernetes.Secret = &kube.ObjectRef{Name: "app-token", UID: "secret-uid-1"}

	noKid := jwt.NewWithClaims(jwt.SigningMethodRS256, is[0].Claims("team-a", "app", testUID, []string{testAudience}, time.Hour))
	noKidToken, err := noKid.SignedString(is[0].Key())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		token string
		want  kube.Identity
	}{
		{"RS256", mustToken(t, is[0], "team-a", "app", testUID), kube.Identity{Namespace: "team-a", Name: "app", UID: testUID}},
		{"ES256", mustToken(t, is[3], "team-b", "worker", testUID), kube.Identity{Namespace: "team-b", Name: "worker", UID: testUID}},
		{"pod bound", mustSign(t, is[0], podBound), kube.Identity{Namespace: "team-a", Name: "builder.v2", UID: testUID, PodName: "builder-7d9f", PodUID: "pod-uid-1", NodeName: "node-1", NodeUID: "node-uid-1"}},
		{"secret bound", mustSign(t, is[0], secretBound), kube.Identity{Namespace: "team-a", Name: "app", UID: testUID, SecretName: "app-token", SecretUID: "secret-uid-1"}},
		{"surrounding whitespace", " \n" + mustToken(t, is[0], "team-a", "app", testUID) + "\n", kube.Identity{Namespace: "team-a", Name: "app", UID: testUID}},
		// keyfunc tries every published key when the header names none.
		{"no kid", noKidToken, kube.Identity{Namespace: "team-a", Name: "app", UID: testUID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(context.Background(), tt.token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if time.Until(got.Expiry) < 59*time.Minute || time.Until(got.Expiry) > time.Hour {
				t.Errorf("Expiry = %s, want about an hour from now", got.Expiry)
			}
			got.Expiry = time.Time{}
			if got != tt.want {
				t.Errorf("Verify = %+v, want %+v", got, tt.want)
			}
		})
	}
	if got, want := (kube.Identity{Namespace: "ns", Name: "sa"}).Username(), "system:serviceaccount:ns:sa"; got != want {
		t.Errorf("Username = %q, want %q", got, want)
	}
}

func TestVerifyRejectsHostileTokens(t *testing.T) {
	is := testIssuers(t)
	good, stranger := is[0], is[1]
	srv := newJWKSServer(t, good)
	// A long unknown-kid interval: only the first unknown kid may trigger a fetch.
	v, _ := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) { c.UnknownKIDRefreshInterval = time.Hour })
	waitKeys(t, v, 1)

	claims := func(mod func(c *kube.ServiceAccountClaims)) *kube.ServiceAccountClaims {
		c := good.Claims("team-a", "app", testUID, []string{testAudience}, time.Hour)
		mod(c)
		return c
	}
	now := time.Now()

	pubDER, err := x509.MarshalPKIXPublicKey(good.Key().Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs256 := func(secret []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(func(*kube.ServiceAccountClaims) {}))
		tok.Header["kid"] = good.KeyID()
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims(func(*kube.ServiceAccountClaims) {}))
	none.Header["kid"] = good.KeyID()
	noneToken, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	// Tampered: a valid token whose payload is swapped for one naming another namespace.
	valid := mustToken(t, good, "team-a", "app", testUID)
	parts := strings.Split(valid, ".")
	forged, err := json.Marshal(claims(func(c *kube.ServiceAccountClaims) {
		c.Subject = "system:serviceaccount:kube-system:admin"
		c.Kubernetes.Namespace, c.Kubernetes.ServiceAccount.Name = "kube-system", "admin"
	}))
	if err != nil {
		t.Fatal(err)
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]

	// Wrong kid: signed by the published key but naming the stranger's kid.
	wrongKid := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(func(*kube.ServiceAccountClaims) {}))
	wrongKid.Header["kid"] = stranger.KeyID()
	wrongKidToken, err := wrongKid.SignedString(good.Key())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"missing", "", kube.ErrNoToken},
		{"blank", " \t\n", kube.ErrNoToken},
		{"garbage", "not a token", kube.ErrMalformedToken},
		{"bad base64", "a.b.c", kube.ErrMalformedToken},
		{"huge", strings.Repeat("a", kube.MaxTokenBytes+1), kube.ErrMalformedToken},
		{"expired", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) {
			c.IssuedAt, c.NotBefore = jwt.NewNumericDate(now.Add(-2*time.Hour)), jwt.NewNumericDate(now.Add(-2*time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Hour))
		})), kube.ErrExpired},
		{"not yet valid", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) {
			c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour))
		})), kube.ErrNotYetValid},
		{"issued in the future", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour))
		})), kube.ErrNotYetValid},
		{"wrong issuer", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Issuer = "https://evil.example" })), kube.ErrWrongIssuer},
		{"no issuer", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Issuer = "" })), kube.ErrWrongIssuer},
		{"wrong issuer and expired", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) {
			c.Issuer = "https://evil.example"
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Hour))
		})), kube.ErrWrongIssuer},
		{"wrong audience", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) {
			c.Audience = jwt.ClaimStrings{"https://kubernetes.default.svc"}
		})), kube.ErrWrongAudience},
		{"no audience", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Audience = nil })), kube.ErrWrongAudience},
		{"alg none", noneToken, kube.ErrBadSignature},
		{"HS256 keyed with public key PEM", hs256(pubPEM), kube.ErrBadSignature},
		{"HS256 keyed with public key DER", hs256(pubDER), kube.ErrBadSignature},
		{"tampered payload", tampered, kube.ErrBadSignature},
		{"signature stripped", parts[0] + "." + parts[1] + ".", kube.ErrBadSignature},
		{"kid of another key", wrongKidToken, kube.ErrBadSignature},
		{"unknown kid", mustToken(t, stranger, "team-a", "app", testUID), kube.ErrBadSignature},
		{"missing kubernetes.io", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Kubernetes = nil })), kube.ErrBadClaims},
		{"missing serviceaccount", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Kubernetes.ServiceAccount = nil })), kube.ErrBadClaims},
		{"missing uid", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Kubernetes.ServiceAccount.UID = "" })), kube.ErrBadClaims},
		{"missing namespace", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) {
			c.Kubernetes.Namespace = ""
			c.Subject = "system:serviceaccount::app"
		})), kube.ErrBadClaims},
		{"namespace with wildcard", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) {
			c.Kubernetes.Namespace = "*"
			c.Subject = "system:serviceaccount:*:app"
		})), kube.ErrBadClaims},
		{"sub names another serviceaccount", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) {
			c.Subject = "system:serviceaccount:team-a:admin"
		})), kube.ErrBadClaims},
		{"sub names another namespace", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) {
			c.Subject = "system:serviceaccount:kube-system:app"
		})), kube.ErrBadClaims},
		{"no sub", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Subject = "" })), kube.ErrBadClaims},
		{"no exp", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.ExpiresAt = nil })), kube.ErrBadClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			if id != (kube.Identity{}) {
				t.Errorf("Verify returned identity %+v with an error", id)
			}
			if tt.token != "" && len(tt.token) > 20 && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error message contains the token")
			}
		})
	}
}

func TestVerifyUnknownKidRefresh(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0])
	v, _ := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) { c.UnknownKIDRefreshInterval = time.Hour })
	waitKeys(t, v, 1)
	ctx := context.Background()

	// A key rotated into the JWKS is picked up by the first token that uses it.
	srv.serve(is[0], is[1])
	before := srv.hits.Load()
	if _, err := v.Verify(ctx, mustToken(t, is[1], "ns", "sa", testUID)); err != nil {
		t.Fatalf("Verify with rotated-in key: %v", err)
	}
	if got := srv.hits.Load() - before; got != 1 {
		t.Errorf("JWKS fetched %d times for the new kid, want 1", got)
	}
	if got := v.KeyCount(); got != 2 {
		t.Errorf("KeyCount = %d, want 2", got)
	}

	// The next unknown kid within the interval is refused without touching the endpoint, even
	// when many arrive at once and even though the key is there by now.
	srv.serve(is[0], is[1], is[2])
	before = srv.hits.Load()
	tok := mustToken(t, is[2], "ns", "sa", testUID)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := v.Verify(ctx, tok); !errors.Is(err, kube.ErrBadSignature) {
				t.Errorf("Verify with rate-limited unknown kid: %v, want %v", err, kube.ErrBadSignature)
			}
		})
	}
	wg.Wait()
	if got := srv.hits.Load() - before; got != 0 {
		t.Errorf("JWKS fetched %d times while rate limited, want 0", got)
	}
}

func TestVerifyUnknownKidRefreshRecovers(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0])
	v, _ := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) { c.UnknownKIDRefreshInterval = 50 * time.Millisecond })
	waitKeys(t, v, 1)
	tok := mustToken(t, is[1], "ns", "sa", testUID)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, kube.ErrBadSignature) {
		t.Fatalf("Verify before rotation: %v, want %v", err, kube.ErrBadSignature)
	}
	srv.serve(is[0], is[1])
	testsupport.WaitFor(t, "rotated key to verify", 10*time.Second, func() bool {
		_, err := v.Verify(context.Background(), tok)
		return err == nil
	})
}

func TestVerifierJWKSUnreachableAtStart(t *testing.T) {
	is := testIssuers(t)
	tests := []struct {
		name  string
		start func(t *testing.T) (url string, heal func())
	}{
		{"connection refused", func(t *testing.T) (string, func()) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			return "http://" + addr + "/openid/v1/jwks", func() {
				l, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("port %s was taken by another process before the JWKS server could come back on it: %v", addr, err)
				}
				srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: is[0].JWKSHandler()}}
				srv.Start()
				t.Cleanup(srv.Close)
			}
		}},
		{"HTTP 503", func(t *testing.T) (string, func()) {
			srv := newJWKSServer(t, is[0])
			srv.fail(http.StatusServiceUnavailable, nil)
			return srv.URL, func() { srv.serve(is[0]) }
		}},
		{"empty key set", func(t *testing.T) (string, func()) {
			srv := newJWKSServer(t, is[0])
			srv.fail(0, []byte(`{"keys":[]}`))
			return srv.URL, func() { srv.serve(is[0]) }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, heal := tt.start(t)
			v, reg := newTestVerifier(t, url)
			tok := mustToken(t, is[0], "ns", "sa", testUID)
			testsupport.WaitFor(t, "a failed refresh", 10*time.Second, func() bool {
				return metricValue(t, reg, "nats_callout_jwks_refresh_errors_total") > 0
			})
			if got := v.KeyCount(); got != 0 {
				t.Fatalf("KeyCount = %d before the JWKS is reachable, want 0", got)
			}
			if _, err := v.Verify(context.Background(), tok); !errors.Is(err, kube.ErrBadSignature) {
				t.Fatalf("Verify without keys: %v, want %v", err, kube.ErrBadSignature)
			}
			heal()
			waitKeys(t, v, 1)
			if _, err := v.Verify(context.Background(), tok); err != nil {
				t.Fatalf("Verify after the JWKS appeared: %v", err)
			}
			if got := metricValue(t, reg, "nats_callout_jwks_keys"); got != 1 {
				t.Errorf("nats_callout_jwks_keys = %v, want 1", got)
			}
		})
	}
}

func TestVerifierBackgroundRefresh(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0], is[1])
	v, reg := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) { c.RefreshInterval = 20 * time.Millisecond })
	waitKeys(t, v, 2)
	revoked := mustToken(t, is[1], "ns", "sa", testUID)
	if _, err := v.Verify(context.Background(), revoked); err != nil {
		t.Fatalf("Verify before revocation: %v", err)
	}

	// A broken answer keeps the keys we have and is counted.
	errs := metricValue(t, reg, "nats_callout_jwks_refresh_errors_total")
	srv.fail(0, []byte("<html>oops</html>"))
	testsupport.WaitFor(t, "refresh errors to be counted", 10*time.Second, func() bool {
		return metricValue(t, reg, "nats_callout_jwks_refresh_errors_total") > errs
	})
	if got := v.KeyCount(); got != 2 {
		t.Errorf("KeyCount after a broken refresh = %d, want 2 (kept)", got)
	}

	// A key removed from the JWKS stops verifying at the next refresh.
	srv.serve(is[0])
	waitKeys(t, v, 1)
	if _, err := v.Verify(context.Background(), revoked); !errors.Is(err, kube.ErrBadSignature) {
		t.Errorf("Verify with a revoked key: %v, want %v", err, kube.ErrBadSignature)
	}
}

func TestVerifierSkipsUnusableKeys(t *testing.T) {
	is := testIssuers(t)
	var rsaKey map[string]any
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(is[0].JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	rsaKey = set.Keys[0]
	body, err := json.Marshal(map[string]any{"keys": []any{
		map[string]any{"kty": "oct", "kid": "hmac", "k": base64.RawURLEncoding.EncodeToString([]byte("secret"))},
		map[string]any{"kty": "RSA", "kid": "enc", "use": "enc", "n": rsaKey["n"], "e": rsaKey["e"]},
		map[string]any{"kty": "RSA", "kid": "broken", "n": "!!!", "e": "AQAB"},
		rsaKey,
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := newJWKSServer(t)
	srv.fail(0, body)
	v, _ := newTestVerifier(t, srv.URL)
	waitKeys(t, v, 1)
	if _, err := v.Verify(context.Background(), mustToken(t, is[0], "ns", "sa", testUID)); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestVerifyContextCanceled(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0])
	v, _ := newTestVerifier(t, srv.URL)
	waitKeys(t, v, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := v.Verify(ctx, mustToken(t, is[1], "ns", "sa", testUID))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with canceled context: %v, want %v", err, context.Canceled)
	}
}

func TestNewVerifierConfig(t *testing.T) {
	ok := kube.VerifierConfig{JWKSURL: "https://kubernetes.default.svc/openid/v1/jwks", Issuer: testIssuer, Audience: testAudience}
	tests := []struct {
		name    string
		mod     func(c *kube.VerifierConfig)
		wantErr string
	}{
		{"valid", func(*kube.VerifierConfig) {}, ""},
		{"no URL", func(c *kube.VerifierConfig) { c.JWKSURL = "" }, "JWKS URL is required"},
		{"relative URL", func(c *kube.VerifierConfig) { c.JWKSURL = "/openid/v1/jwks" }, "absolute http(s) URL"},
		{"file URL", func(c *kube.VerifierConfig) { c.JWKSURL = "file:///etc/jwks.json" }, "absolute http(s) URL"},
		{"no issuer", func(c *kube.VerifierConfig) { c.Issuer = "" }, "issuer is required"},
		{"no audience", func(c *kube.VerifierConfig) { c.Audience = "" }, "audience is required"},
		{"negative leeway", func(c *kube.VerifierConfig) { c.Leeway = -time.Second }, "negative leeway"},
		{"negative refresh", func(c *kube.VerifierConfig) { c.RefreshInterval = -time.Second }, "negative JWKS refresh"},
		{"negative unknown-kid refresh", func(c *kube.VerifierConfig) { c.UnknownKIDRefreshInterval = -time.Second }, "negative unknown-kid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.mod(&cfg)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			v, err := kube.NewVerifier(ctx, cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewVerifier: %v", err)
				}
				cancel()
				<-v.Done()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewVerifier error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestTokenIssuer(t *testing.T) {
	is := testIssuers(t)
	if _, err := kubefake.NewTokenIssuer(""); err == nil {
		t.Error("NewTokenIssuer(\"\") succeeded, want an error")
	}
	if _, err := is[0].ServiceAccountToken("ns", "sa", testUID, []string{testAudience}, 0); err == nil {
		t.Error("ServiceAccountToken with zero ttl succeeded, want an error")
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(is[0].JWKS(), &set); err != nil {
		t.Fatalf("JWKS is not JSON: %v", err)
	}
	if len(set.Keys) != 1 || set.Keys[0]["kid"] != is[0].KeyID() || set.Keys[0]["alg"] != "RS256" || set.Keys[0]["use"] != "sig" {
		t.Errorf("JWKS keys = %v, want one RS256 signing key with kid %q", set.Keys, is[0].KeyID())
	}
	if _, private := set.Keys[0]["d"]; private {
		t.Error("JWKS publishes private key material")
	}
	rec := httptest.NewRecorder()
	is[0].JWKSHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openid/v1/jwks", nil))
	if !bytes.Equal(rec.Body.Bytes(), is[0].JWKS()) {
		t.Errorf("JWKSHandler body = %s, want %s", rec.Body.Bytes(), is[0].JWKS())
	}

	// The claim shape matches what the API server mints.
	tok := mustToken(t, is[0], "team-a", "app", testUID)
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "kubernetes.io"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("token lacks claim %q: %s", k, payload)
		}
	}
	want := `{"namespace":"team-a","serviceaccount":{"name":"app","uid":"` + testUID + `"}}`
	if got, _ := json.Marshal(claims["kubernetes.io"]); string(got) != want {
		t.Errorf("kubernetes.io = %s, want %s", got, want)
	}
}

// BenchmarkVerify measures token verification: RS256 and ES256 with the verified-token cache
// off (every login a signature check), and RS256/cached a token verified before.
func BenchmarkVerify(b *testing.B) {
	is := testIssuers(b)
	for _, bm := range []struct {
		name  string
		iss   *kubefake.TokenIssuer
		cache int
	}{{"RS256", is[0], -1}, {"ES256", is[3], -1}, {"RS256/cached", is[0], 0}} {
		b.Run(bm.name, func(b *testing.B) {
			srv := newJWKSServer(b, bm.iss)
			v, _ := newTestVerifier(b, srv.URL, func(c *kube.VerifierConfig) { c.TokenCacheSize = bm.cache })
			waitKeys(b, v, 1)
			tok := mustToken(b, bm.iss, "team-a", "app", testUID)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestVerifierLogsNoTokens(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0])
	var logs testsupport.LogBuffer
	v, _ := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	waitKeys(t, v, 1)
	srv.fail(http.StatusServiceUnavailable, nil)
	tokens := []string{mustToken(t, is[0], "ns", "sa", testUID), mustToken(t, is[1], "ns", "sa", testUID)}
	for _, tok := range tokens {
		_, _ = v.Verify(context.Background(), tok)
	}
	out := logs.String()
	if !strings.Contains(out, "JWKS loaded") || !strings.Contains(out, "JWKS refresh failed") {
		t.Errorf("logs lack the load and failure lines:\n%s", out)
	}
	for _, tok := range tokens {
		for _, part := range strings.Split(tok, ".") {
			if strings.Contains(out, part) {
				t.Fatalf("logs contain part of a token:\n%s", out)
			}
		}
	}
}

// forge signs claims with method and key under exactly the given header fields (alg is set
// by method).
func forge(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	delete(tok.Header, "typ")
	maps.Copy(tok.Header, header)
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withoutAlg is the JWKS of issuers with the alg of every key removed.
func withoutAlg(t testing.TB, issuers ...*kubefake.TokenIssuer) []byte {
	t.Helper()
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	for _, iss := range issuers {
		var one struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal(iss.JWKS(), &one); err != nil {
			t.Fatal(err)
		}
		for _, k := range one.Keys {
			delete(k, "alg")
		}
		set.Keys = append(set.Keys, one.Keys...)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVerifyTokenHeader checks what a token's header may ask for: a crit header is refused
// before any key is looked up, and a key verifies only its own algorithm, with a kid and
// without, whether the JWKS publishes the key's alg or leaves it to the key type.
func TestVerifyTokenHeader(t *testing.T) {
	is := testIssuers(t)
	rsaIss, ecIss := is[0], is[3]
	claims := func() *kube.ServiceAccountClaims {
		return rsaIss.Claims("team-a", "app", testUID, []string{testAudience}, time.Hour)
	}
	rsaKey, ecKey := rsaIss.Key(), ecIss.Key()
	rsaKID, ecKID := map[string]any{"kid": rsaIss.KeyID()}, map[string]any{"kid": ecIss.KeyID()}
	noKID := map[string]any{}
	tests := []struct {
		name   string
		token  string
		want   error // nil: accepted
		detail string
	}{
		{"RS256 with kid", forge(t, jwt.SigningMethodRS256, rsaKey, rsaKID, claims()), nil, ""},
		{"RS256 without kid", forge(t, jwt.SigningMethodRS256, rsaKey, noKID, claims()), nil, ""},
		{"ES256 with kid", forge(t, jwt.SigningMethodES256, ecKey, ecKID, claims()), nil, ""},
		{"ES256 without kid", forge(t, jwt.SigningMethodES256, ecKey, noKID, claims()), nil, ""},
		{"PS256 by the RS256 key, with kid", forge(t, jwt.SigningMethodPS256, rsaKey, rsaKID, claims()), kube.ErrBadSignature, "is for algorithm RS256, the token says PS256"},
		{"PS256 by the RS256 key, without kid", forge(t, jwt.SigningMethodPS256, rsaKey, noKID, claims()), kube.ErrBadSignature, "none of the 2 keys loaded is for algorithm PS256"},
		{"RS512 by the RS256 key, without kid", forge(t, jwt.SigningMethodRS512, rsaKey, noKID, claims()), kube.ErrBadSignature, "algorithm RS512"},
		{"crit with kid", forge(t, jwt.SigningMethodRS256, rsaKey, map[string]any{"kid": rsaIss.KeyID(), "crit": []string{"exp"}, "exp": 1}, claims()), kube.ErrBadSignature, "critical extensions"},
		{"crit without kid", forge(t, jwt.SigningMethodRS256, rsaKey, map[string]any{"crit": []string{"b64"}, "b64": false}, claims()), kube.ErrBadSignature, "critical extensions"},
		{"empty crit", forge(t, jwt.SigningMethodRS256, rsaKey, map[string]any{"kid": rsaIss.KeyID(), "crit": []string{}}, claims()), kube.ErrBadSignature, "critical extensions"},
		{"crit with an unknown kid", forge(t, jwt.SigningMethodRS256, rsaKey, map[string]any{"kid": "not-published", "crit": []string{"x"}}, claims()), kube.ErrBadSignature, "critical extensions"},
		{"kid not a string", forge(t, jwt.SigningMethodRS256, rsaKey, map[string]any{"kid": 7}, claims()), kube.ErrBadSignature, "kid header is not a string"},
	}
	for _, published := range []bool{true, false} {
		t.Run(map[bool]string{true: "alg published", false: "alg left to the key type"}[published], func(t *testing.T) {
			srv := newJWKSServer(t, rsaIss, ecIss)
			if !published {
				srv.mu.Lock()
				srv.body = withoutAlg(t, rsaIss, ecIss)
				srv.mu.Unlock()
			}
			v, _ := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) { c.UnknownKIDRefreshInterval = time.Nanosecond })
			waitKeys(t, v, 2)
			for _, tt := range tests {
				before := srv.hits.Load()
				id, err := v.Verify(context.Background(), tt.token)
				switch {
				case tt.want == nil && err != nil:
					t.Errorf("%s: Verify: %v", tt.name, err)
				case tt.want == nil && id.Namespace != "team-a":
					t.Errorf("%s: identity %+v", tt.name, id)
				case tt.want != nil && (!errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.detail)):
					t.Errorf("%s: Verify error = %v, want %v saying %q", tt.name, err, tt.want, tt.detail)
				}
				if strings.Contains(tt.name, "crit") && srv.hits.Load() != before {
					t.Errorf("%s: the JWKS was fetched for a token refused by its header", tt.name)
				}
			}
		})
	}
}

// TestVerifyErrorsAreBounded checks that what a token says is quoted shortened in the error:
// kid, issuer, audience, sub, names, and parse errors that quote the token.
func TestVerifyErrorsAreBounded(t *testing.T) {
	is := testIssuers(t)
	good := is[0]
	srv := newJWKSServer(t, good)
	v, _ := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) { c.UnknownKIDRefreshInterval = time.Hour })
	waitKeys(t, v, 1)
	long := strings.Repeat("é", 2000) // 4,000 bytes: tokens stay below MaxTokenBytes
	claims := func(mod func(c *kube.ServiceAccountClaims)) *kube.ServiceAccountClaims {
		c := good.Claims("team-a", "app", testUID, []string{testAudience}, time.Hour)
		mod(c)
		return c
	}
	manyAud := make([]string, 100)
	for i := range manyAud {
		manyAud[i] = long[:60]
	}
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"` + good.KeyID() + `"}`))
	hugeExp := base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1` + strings.Repeat("0", 8000) + `}`))
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"long kid", forge(t, jwt.SigningMethodRS256, good.Key(), map[string]any{"kid": long}, claims(func(*kube.ServiceAccountClaims) {})), kube.ErrBadSignature},
		{"long issuer", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Issuer = long })), kube.ErrWrongIssuer},
		{"long audience", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Audience = jwt.ClaimStrings{long} })), kube.ErrWrongAudience},
		{"many audiences", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Audience = manyAud })), kube.ErrWrongAudience},
		{"long sub", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Subject = long })), kube.ErrBadClaims},
		{"long namespace", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Kubernetes.Namespace = long })), kube.ErrBadClaims},
		{"long name", mustSign(t, good, claims(func(c *kube.ServiceAccountClaims) { c.Kubernetes.ServiceAccount.Name = long })), kube.ErrBadClaims},
		{"huge number", header + "." + hugeExp + ".c2ln", kube.ErrMalformedToken},
	}
	for _, tt := range tests {
		_, err := v.Verify(context.Background(), tt.token)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
			continue
		}
		if msg := err.Error(); len(msg) > 1024 || !strings.Contains(msg, "truncated") && !strings.Contains(msg, "more]") {
			t.Errorf("%s: error of %d bytes, want at most 1 KiB with a truncation marker: %.300s", tt.name, len(msg), msg)
		}
	}

	// A bound token's pod name and uid reach the decision log: bounded too.
	c := claims(func(c *kube.ServiceAccountClaims) { c.Kubernetes.Pod = &kube.ObjectRef{Name: long, UID: long} })
	id, err := v.Verify(context.Background(), mustSign(t, good, c))
	if err != nil {
		t.Fatal(err)
	}
	if len(id.PodName) > 300 || len(id.PodUID) > 300 {
		t.Errorf("pod name of %d bytes and uid of %d, want them shortened", len(id.PodName), len(id.PodUID))
	}
}

// FuzzVerify feeds the verifier arbitrary tokens, starting from real ones (RS256, ES256, with
// and without kid) and ones it must refuse (crit, another algorithm, none). It never panics;
// a refusal wraps exactly one of the package's sentinels, stays short and does not quote the
// token; an accepted token is one the issuers signed, for the identity it names.
func FuzzVerify(f *testing.F) {
	is := testIssuers(f)
	rsaIss, ecIss := is[0], is[3]
	claims := func() *kube.ServiceAccountClaims {
		return rsaIss.Claims("team-a", "app", testUID, []string{testAudience}, time.Hour)
	}
	f.Add(mustToken(f, rsaIss, "team-a", "app", testUID))
	f.Add(mustToken(f, ecIss, "team-b", "web.v2", testUID))
	f.Add(forge(f, jwt.SigningMethodRS256, rsaIss.Key(), map[string]any{}, claims()))
	f.Add(forge(f, jwt.SigningMethodPS256, rsaIss.Key(), map[string]any{}, claims()))
	f.Add(forge(f, jwt.SigningMethodRS256, rsaIss.Key(), map[string]any{"kid": rsaIss.KeyID(), "crit": []string{"b64"}, "b64": false}, claims()))
	f.Add(forge(f, jwt.SigningMethodES256, ecIss.Key(), map[string]any{"kid": rsaIss.KeyID()}, claims()))
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("a.b.c")
	f.Add("")

	srv := newJWKSServer(f, rsaIss, ecIss)
	v, _ := newTestVerifier(f, srv.URL, func(c *kube.VerifierConfig) { c.UnknownKIDRefreshInterval = time.Hour })
	waitKeys(f, v, 2)
	sentinels := []error{kube.ErrNoToken, kube.ErrMalformedToken, kube.ErrBadSignature, kube.ErrExpired, kube.ErrNotYetValid,
		kube.ErrWrongIssuer, kube.ErrWrongAudience, kube.ErrBadClaims}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(context.Background(), token)
		if err != nil {
			n := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %q wraps %d sentinels, want 1", err, n)
			}
			if msg := err.Error(); len(msg) > 2048 {
				t.Fatalf("error of %d bytes: %.200s", len(msg), msg)
			}
			if tok := strings.TrimSpace(token); len(tok) > 64 && strings.Contains(err.Error(), tok) {
				t.Fatalf("error quotes the token: %.200s", err)
			}
			return
		}
		// Accepted: the signature is one of the issuers', and the identity is what it says.
		parsed, _, perr := jwt.NewParser().ParseUnverified(strings.TrimSpace(token), &kube.ServiceAccountClaims{})
		if perr != nil {
			t.Fatalf("accepted a token that does not parse: %v", perr)
		}
		c := parsed.Claims.(*kube.ServiceAccountClaims)
		if c.Kubernetes == nil || id.Namespace != c.Kubernetes.Namespace || id.Name != c.Kubernetes.ServiceAccount.Name ||
			c.Subject != id.Username() || parsed.Header["crit"] != nil {
			t.Fatalf("accepted %+v from claims %+v, header %v", id, c, parsed.Header)
		}
		if alg := parsed.Method.Alg(); alg != "RS256" && alg != "ES256" {
			t.Fatalf("accepted algorithm %s", alg)
		}
	})
}
