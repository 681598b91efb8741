package callout_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

const (
	audience   = "nats"
	adminUser  = "admin"
	adminPass  = "admin-pass"
	testIssuer = "https://kubernetes.test"
)

// keys are the nkeys a server-config-mode deployment needs.
type keys struct {
	service nkeys.KeyPair // the service's login (U...)
	issuer  nkeys.KeyPair // auth_callout.issuer (A...)
	xkey    nkeys.KeyPair // auth_callout.xkey (X...), optional
}

func newKeys(t testing.TB, encrypted bool) keys {
	t.Helper()
	var k keys
	var err error
	if k.service, err = nkeys.CreateUser(); err != nil {
		t.Fatal(err)
	}
	if k.issuer, err = nkeys.CreateAccount(); err != nil {
		t.Fatal(err)
	}
	if encrypted {
		if k.xkey, err = nkeys.CreateCurveKeys(); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// serverConfig is the nats-server configuration a user writes for server-config mode, plus an
// APP admin that bypasses the callout (as a NACK-style static user would).
func serverConfig(t *testing.T, port int, k keys, extraAuthUsers ...string) string {
	t.Helper()
	xkey := ""
	if k.xkey != nil {
		xkey = fmt.Sprintf("xkey: %q", testsupport.PublicKey(t, k.xkey))
	}
	users := []string{fmt.Sprintf("{ nkey: %q }", testsupport.PublicKey(t, k.service))}
	authUsers := []string{fmt.Sprintf("%q", testsupport.PublicKey(t, k.service)), fmt.Sprintf("%q", adminUser)}
	for _, u := range extraAuthUsers {
		users = append(users, fmt.Sprintf("{ nkey: %q }", u))
		authUsers = append(authUsers, fmt.Sprintf("%q", u))
	}
	return fmt.Sprintf(`
listen: "127.0.0.1:%d"
accounts {
  AUTH: { users: [ %s ] }
  APP: { users: [ { user: %q, password: %q } ] }
  SYS: {}
}
system_account: SYS
authorization {
  timeout: 2
  auth_callout {
    issuer: %q
    auth_users: [ %s ]
    account: AUTH
    %s
  }
}
`, port, strings.Join(users, ", "), adminUser, adminPass, testsupport.PublicKey(t, k.issuer), strings.Join(authUsers, ", "), xkey)
}

// env is one running deployment: nats-server, the callout service, a token issuer with its
// JWKS, and a Kubernetes API (a MemoryCluster feeding real informers).
type env struct {
	t       *testing.T
	url     string
	server  *server.Server
	keys    keys
	issuer  *kubefake.TokenIssuer
	kube    *kubefake.MemoryCluster
	reg     *prometheus.Registry
	logs    *testsupport.LogBuffer
	handler *callout.Handler
	svc     *callout.Service
	store   *kube.Store
	// adminAuth is how the admin logs in; nil means the server-config APP user and password.
	adminAuth nats.Option
}

type envOptions struct {
	encrypted bool
	maxTTL    time.Duration
	// operator runs nats-server in operator mode (see operator_test.go).
	operator bool
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.operator {
		e, _ := newOperatorEnv(t, o, operatorVariant{})
		return e
	}
	e := &env{t: t, keys: newKeys(t, o.encrypted), kube: newMemoryCluster(t), reg: prometheus.NewRegistry(), logs: &testsupport.LogBuffer{}}
	e.server, _ = testsupport.StartNATS(t, serverConfig(t, -1, e.keys))
	e.url = e.server.ClientURL()

	var err error
	if e.issuer, err = kubefake.NewTokenIssuer(testIssuer); err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(e.issuer.JWKSHandler())
	t.Cleanup(jwks.Close)

	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	verifier, err := kube.NewVerifier(ctx, kube.VerifierConfig{
		JWKSURL: jwks.URL, Issuer: testIssuer, Audience: audience, Logger: log, Registerer: e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	store, err := kube.NewStore(e.kube.Client(), kube.StoreConfig{Logger: log, Registerer: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	ring, err := callout.ParseSigningKeys(testsupport.Seed(t, e.keys.issuer))
	if err != nil {
		t.Fatal(err)
	}
	var xk *callout.XKey
	if o.encrypted {
		if xk, err = callout.ParseXKey(testsupport.Seed(t, e.keys.xkey)); err != nil {
			t.Fatal(err)
		}
	}
	creds, err := callout.ParseCredentials(testsupport.Seed(t, e.keys.service))
	if err != nil {
		t.Fatal(err)
	}
	metrics := callout.NewMetrics(e.reg)
	e.handler, err = callout.NewHandler(callout.HandlerConfig{
		Verifier: verifier, Policies: store,
		SigningKeys: func() *callout.KeyRing { return ring },
		XKey:        func() *callout.XKey { return xk },
		Account:     "APP", MaxTTL: o.maxTTL, Logger: log, Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.svc, err = callout.NewService(callout.ServiceConfig{
		URL: e.url, Credentials: func() *callout.Credentials { return creds },
		Handler: e.handler, Logger: log, Metrics: metrics, ReconnectWait: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = store.Run(ctx) })
	wg.Go(func() {
		if err := e.svc.Run(ctx); err != nil {
			t.Errorf("service: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	testsupport.WaitFor(t, "store synced, JWKS loaded, service subscribed", 10*time.Second, func() bool {
		return store.HasSynced() && verifier.KeyCount() > 0 && e.svc.Ready() == nil
	})
	return e
}

// serviceAccount creates a ServiceAccount and returns a token for it.
func (e *env) serviceAccount(ns, name string, annotations map[string]string) (string, *kube.ServiceAccount) {
	e.t.Helper()
	sa := &kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: types.UID(fmt.Sprintf("uid-%s-%s-%d", ns, name, time.Now().UnixNano())),
		Annotations: annotations,
	}}
	created, err := e.kube.Create(context.Background(), sa)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.issuer.ServiceAccountToken(ns, name, string(created.UID), []string{audience}, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	// The informer sees the object shortly after the API does.
	testsupport.WaitFor(e.t, "ServiceAccount in cache", 10*time.Second, func() bool {
		_, err := e.handlerPolicy(ns, name, string(created.UID))
		return !errors.Is(err, kube.ErrServiceAccountNotFound)
	})
	return tok, created
}

func (e *env) handlerPolicy(ns, name, uid string) (kube.Policy, error) {
	return e.store.Policy(kube.Identity{Namespace: ns, Name: name, UID: uid, Expiry: time.Now().Add(time.Hour)})
}

// connect dials as a workload with a token and reports asynchronous permission errors.
func (e *env) connect(token string, opts ...nats.Option) (*nats.Conn, chan error, error) {
	errs := make(chan error, 16)
	opts = append([]nats.Option{
		nats.Token(token),
		nats.MaxReconnects(0),
		nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }),
	}, opts...)
	nc, err := nats.Connect(e.url, opts...)
	return nc, errs, err
}

// admin connects as an APP user who bypasses the callout (static credentials in operator mode).
func (e *env) admin() *nats.Conn {
	e.t.Helper()
	auth := e.adminAuth
	if auth == nil {
		auth = nats.UserInfo(adminUser, adminPass)
	}
	nc, err := nats.Connect(e.url, auth)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// newMemoryCluster returns an empty in-memory stand-in for the API server's ServiceAccounts.
func newMemoryCluster(t testing.TB) *kubefake.MemoryCluster {
	t.Helper()
	m, err := kubefake.NewMemoryCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}
