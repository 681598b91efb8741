package callout_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// operatorWorld is an operator-mode deployment made with the jwt library the way nsc makes
// one: an operator that signs accounts with its signing key; a system account; the callout
// account AUTH (auth_users = the service's user, allowed_accounts = APP, xkey when encrypted)
// with a signing key; the target account APP with an unscoped and a scoped signing key; OTHER,
// a healthy account the callout may not place users in; and NACK, whose users log in with
// static credentials as a NACK controller's do.
type operatorWorld struct {
	t   *testing.T
	dir string

	operator, operatorSK nkeys.KeyPair
	// Accounts and their signing keys (appScoped is a scoped one).
	sys, auth, authSK, app, appSK, appScoped, other, otherSK, nack nkeys.KeyPair
	service, xkey                                                  nkeys.KeyPair
	accounts                                                       map[string]*natsjwt.AccountClaims // by public key

	// sentinel is a bearer user JWT of AUTH (default_sentinel) for the user key sentinelUser.
	sentinel     string
	sentinelUser nkeys.KeyPair
	// strict makes the operator require signing keys (nsc edit operator --require-signing-keys):
	// account keys then sign nothing but the account's own JWT changes.
	strict bool

	// Account JWT files, as `nsc describe account NAME --raw` writes them.
	calloutJWTPath, appJWTPath, otherJWTPath string
}

func newKP(t *testing.T, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func newOperatorWorld(t *testing.T, encrypted bool) *operatorWorld {
	t.Helper()
	w := &operatorWorld{t: t, dir: t.TempDir(), accounts: map[string]*natsjwt.AccountClaims{}}
	w.operator, w.operatorSK = newKP(t, nkeys.CreateOperator), newKP(t, nkeys.CreateOperator)
	for _, p := range []*nkeys.KeyPair{&w.sys, &w.auth, &w.authSK, &w.app, &w.appSK, &w.appScoped, &w.other, &w.otherSK, &w.nack} {
		*p = newKP(t, nkeys.CreateAccount)
	}
	w.service = newKP(t, nkeys.CreateUser)
	if encrypted {
		w.xkey = newKP(t, nkeys.CreateCurveKeys)
	}
	account := func(kp nkeys.KeyPair, name string) *natsjwt.AccountClaims {
		ac := natsjwt.NewAccountClaims(testsupport.PublicKey(t, kp))
		ac.Name = name
		w.accounts[ac.Subject] = ac
		return ac
	}
	account(w.sys, "SYS")
	auth := account(w.auth, "AUTH")
	auth.SigningKeys.Add(testsupport.PublicKey(t, w.authSK))
	auth.Authorization.AuthUsers.Add(testsupport.PublicKey(t, w.service))
	auth.Authorization.AllowedAccounts.Add(testsupport.PublicKey(t, w.app))
	if encrypted {
		auth.Authorization.XKey = testsupport.PublicKey(t, w.xkey)
	}
	app := account(w.app, "APP")
	app.SigningKeys.Add(testsupport.PublicKey(t, w.appSK))
	scope := natsjwt.NewUserScope()
	scope.Key, scope.Role = testsupport.PublicKey(t, w.appScoped), "workloads"
	scope.Template.Pub.Allow.Add("shared.>")
	scope.Template.Sub.Allow.Add("shared.>")
	app.SigningKeys.AddScopedSigner(scope)
	account(w.other, "OTHER").SigningKeys.Add(testsupport.PublicKey(t, w.otherSK))
	account(w.nack, "NACK")

	// Token-only clients present this bearer JWT (default_sentinel): it lets them reach the
	// callout and nothing else.
	w.sentinelUser = newKP(t, nkeys.CreateUser)
	sentinel := natsjwt.NewUserClaims(testsupport.PublicKey(t, w.sentinelUser))
	sentinel.Name = "sentinel"
	sentinel.BearerToken = true
	sentinel.Pub.Deny.Add(">")
	sentinel.Sub.Deny.Add(">")
	sentinel.IssuerAccount = testsupport.PublicKey(t, w.auth) // signed by AUTH's signing key, as nsc does
	var err error
	if w.sentinel, err = sentinel.Encode(w.authSK); err != nil {
		t.Fatal(err)
	}
	w.calloutJWTPath = w.writeFile("auth.jwt", []byte(w.accountJWT(w.auth)))
	w.appJWTPath = w.writeFile("app.jwt", []byte(w.accountJWT(w.app)))
	w.otherJWTPath = w.writeFile("other.jwt", []byte(w.accountJWT(w.other)))
	return w
}

func (w *operatorWorld) writeFile(name string, data []byte) string {
	w.t.Helper()
	path := filepath.Join(w.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		w.t.Fatal(err)
	}
	return path
}

// accountJWT encodes an account's claims, signed by the operator's signing key.
func (w *operatorWorld) accountJWT(kp nkeys.KeyPair) string {
	w.t.Helper()
	tok, err := w.accounts[testsupport.PublicKey(w.t, kp)].Encode(w.operatorSK)
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

// serverConfig is the nats-server config of an operator-mode deployment with the memory
// resolver: no auth_callout block (the callout lives in AUTH's JWT).
func (w *operatorWorld) serverConfig(defaultSentinel bool) string {
	w.t.Helper()
	oc := natsjwt.NewOperatorClaims(testsupport.PublicKey(w.t, w.operator))
	oc.Name = "OP"
	oc.SigningKeys.Add(testsupport.PublicKey(w.t, w.operatorSK))
	oc.SystemAccount = testsupport.PublicKey(w.t, w.sys)
	oc.StrictSigningKeyUsage = w.strict
	opJWT, err := oc.Encode(w.operator)
	if err != nil {
		w.t.Fatal(err)
	}
	var preload strings.Builder
	for pk := range w.accounts {
		kp := map[string]nkeys.KeyPair{testsupport.PublicKey(w.t, w.sys): w.sys, testsupport.PublicKey(w.t, w.auth): w.auth, testsupport.PublicKey(w.t, w.app): w.app, testsupport.PublicKey(w.t, w.other): w.other, testsupport.PublicKey(w.t, w.nack): w.nack}[pk]
		fmt.Fprintf(&preload, "  %s: %q\n", pk, w.accountJWT(kp))
	}
	conf := fmt.Sprintf(`
listen: "127.0.0.1:-1"
operator: %q
system_account: %q
resolver: MEMORY
resolver_preload: {
%s}
`, opJWT, testsupport.PublicKey(w.t, w.sys), preload.String())
	if defaultSentinel {
		conf += fmt.Sprintf("default_sentinel: %q\n", w.sentinel)
	}
	return conf
}

// creds writes a .creds file for user in account, signed by signer (the account's key or one
// of its signing keys, in which case issuer_account is set as nsc does).
func (w *operatorWorld) creds(name string, user, account, signer nkeys.KeyPair, mut func(*natsjwt.UserClaims)) string {
	w.t.Helper()
	uc := natsjwt.NewUserClaims(testsupport.PublicKey(w.t, user))
	uc.Name = name
	if testsupport.PublicKey(w.t, signer) != testsupport.PublicKey(w.t, account) {
		uc.IssuerAccount = testsupport.PublicKey(w.t, account)
	}
	if mut != nil {
		mut(uc)
	}
	tok, err := uc.Encode(signer)
	if err != nil {
		w.t.Fatal(err)
	}
	data, err := natsjwt.FormatUserConfig(tok, testsupport.Seed(w.t, user))
	if err != nil {
		w.t.Fatal(err)
	}
	return w.writeFile(name+".creds", data)
}

// operatorVariant picks the keys the service is given. The zero value is the recommended
// set-up: responses signed by AUTH's signing key, users placed in APP by APP's unscoped
// signing key, default_sentinel set.
type operatorVariant struct {
	// calloutIdentity signs responses with AUTH's own key instead of its signing key.
	calloutIdentity bool
	// target is "APP" (default), "AUTH" (users land in the callout account) or "OTHER" (not in
	// allowed_accounts).
	target string
	// targetKey is "sk" (default: an unscoped signing key), "identity" or "scoped".
	targetKey string
	// noDefaultSentinel leaves default_sentinel out of the server config.
	noDefaultSentinel bool
	// misconfigured expects CheckOperatorSetup to fail and runs the service anyway.
	misconfigured bool
	// strict requires signing keys (nsc edit operator --require-signing-keys).
	strict bool
}

// newOperatorEnv runs nats-server in operator mode and the service against it, logging in
// with a real .creds file. The env's keys are the service's user, the callout account (which
// requests name in `sub`) and the xkey, and the admin is a static APP user.
func newOperatorEnv(t *testing.T, o envOptions, v operatorVariant) (*env, *operatorWorld) {
	t.Helper()
	w := newOperatorWorld(t, o.encrypted)
	w.strict = v.strict
	e := &env{t: t, keys: keys{service: w.service, issuer: w.auth, xkey: w.xkey}, kube: newMemoryCluster(t), reg: prometheus.NewRegistry(), logs: &testsupport.LogBuffer{}}
	e.server, _ = testsupport.StartNATS(t, w.serverConfig(!v.noDefaultSentinel))
	e.url = e.server.ClientURL()
	e.adminAuth = nats.UserCredentials(w.creds("admin", newKP(t, nkeys.CreateUser), w.app, w.appSK, nil))

	credsData, err := os.ReadFile(w.creds("callout", w.service, w.auth, w.authSK, nil))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := callout.ParseCredentials(credsData)
	if err != nil {
		t.Fatal(err)
	}
	calloutKey := w.authSK
	if v.calloutIdentity {
		calloutKey = w.auth
	}
	target, targetJWT := w.app, w.appJWTPath
	targetKey := map[string]nkeys.KeyPair{"": w.appSK, "sk": w.appSK, "identity": w.app, "scoped": w.appScoped}[v.targetKey]
	switch v.target {
	case "AUTH":
		target, targetKey, targetJWT = w.auth, calloutKey, w.calloutJWTPath
	case "OTHER":
		target, targetKey, targetJWT = w.other, w.otherSK, w.otherJWTPath
	}
	ring := parseKeys(t, testsupport.Seed(t, calloutKey))
	targetRing := parseKeys(t, testsupport.Seed(t, targetKey))
	var xk *callout.XKey
	if o.encrypted {
		if xk, err = callout.ParseXKey(testsupport.Seed(t, w.xkey)); err != nil {
			t.Fatal(err)
		}
	}
	err = callout.CheckOperatorSetup(callout.OperatorSetup{
		Credentials: creds, SigningKeys: ring, TargetAccount: testsupport.PublicKey(t, target), TargetKeys: targetRing, XKey: xk,
		CalloutAccountJWT: readAccountJWT(t, w.calloutJWTPath), TargetAccountJWT: readAccountJWT(t, targetJWT),
	})
	if (err != nil) != v.misconfigured {
		t.Fatalf("CheckOperatorSetup: %v (misconfigured: %v)", err, v.misconfigured)
	}

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
	if e.store, err = kube.NewStore(e.kube.Client(), kube.StoreConfig{Logger: log, Registerer: e.reg}); err != nil {
		t.Fatal(err)
	}
	metrics := callout.NewMetrics(e.reg)
	e.handler, err = callout.NewHandler(callout.HandlerConfig{
		Verifier: verifier, Policies: e.store,
		SigningKeys: func() *callout.KeyRing { return ring },
		XKey:        func() *callout.XKey { return xk },
		Account:     testsupport.PublicKey(t, target), MaxTTL: o.maxTTL, Logger: log, Metrics: metrics,
		Operator: &callout.OperatorConfig{
			CalloutAccount: creds.Account,
			TargetKeys:     func() *callout.KeyRing { return targetRing },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.svc, err = callout.NewService(callout.ServiceConfig{
		URL: e.url, Credentials: func() *callout.Credentials { return creds }, UseJWT: true,
		Handler: e.handler, Logger: log, Metrics: metrics, ReconnectWait: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = e.store.Run(ctx) })
	wg.Go(func() {
		if err := e.svc.Run(ctx); err != nil {
			t.Errorf("service: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	testsupport.WaitFor(t, "store synced, JWKS loaded, service subscribed", 10*time.Second, func() bool {
		return e.store.HasSynced() && verifier.KeyCount() > 0 && e.svc.Ready() == nil
	})
	return e, w
}

func parseKeys(t *testing.T, data []byte) *callout.KeyRing {
	t.Helper()
	kr, err := callout.ParseSigningKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func readAccountJWT(t *testing.T, path string) *natsjwt.AccountClaims {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := callout.ParseAccountJWT(data)
	if err != nil {
		t.Fatal(err)
	}
	return ac
}

// connAccount returns the account nats-server bound the named connection to.
func connAccount(t *testing.T, s *server.Server, name string) string {
	t.Helper()
	cz, err := s.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range cz.Conns {
		if ci.Name == name {
			return ci.Account
		}
	}
	t.Fatalf("no connection named %q", name)
	return ""
}

// totalRequests sums nats_callout_requests_total over every result and reason.
func totalRequests(t *testing.T, e *env) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "nats_callout_requests_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

func expectRefused(t *testing.T, nc *nats.Conn, err error) {
	t.Helper()
	if err == nil {
		nc.Close()
		t.Fatal("connected, want Authorization Violation")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("got %v, want Authorization Violation", err)
	}
}

// Each way of signing that nats-server accepts places the user in the intended account.
func TestOperatorSigners(t *testing.T) {
	for _, c := range []struct {
		name   string
		v      operatorVariant
		target string // account name the user must land in
	}{
		{"callout signing key, target signing key", operatorVariant{}, "APP"},
		{"callout key, target key", operatorVariant{calloutIdentity: true, targetKey: "identity"}, "APP"},
		{"callout key, target signing key", operatorVariant{calloutIdentity: true}, "APP"},
		{"users in the callout account, one signing key file", operatorVariant{target: "AUTH"}, "AUTH"},
		{"users in the callout account, its own key", operatorVariant{target: "AUTH", calloutIdentity: true}, "AUTH"},
		{"operator requires signing keys", operatorVariant{strict: true}, "APP"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, w := newOperatorEnv(t, envOptions{}, c.v)
			want := map[string]string{"APP": testsupport.PublicKey(t, w.app), "AUTH": testsupport.PublicKey(t, w.auth)}[c.target]
			token, _ := e.serviceAccount("team-a", "api", nil)
			nc, errs, err := e.connect(token, nats.Name("probe"))
			if err != nil {
				t.Fatalf("connect: %v\nlogs:\n%s", err, lastLines(e.logs.String(), 3))
			}
			defer nc.Close()
			if got := connAccount(t, e.server, "probe"); got != want {
				t.Errorf("user placed in %s, want %s (%s)", got, c.target, want)
			}
			// Permissions come from the user JWT, not the account's defaults.
			if err := nc.Publish("team-b.x", nil); err != nil {
				t.Fatal(err)
			}
			_ = nc.Flush()
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) {
					t.Errorf("publish outside the namespace: %v, want a permissions violation", err)
				}
			case <-time.After(2 * time.Second):
				t.Error("publish outside the namespace: no permissions violation")
			}
			if c.target == "APP" {
				expectPublish(t, e, token, "team-a.orders", true)
			}
		})
	}
}

// The response and the user JWT name the account a signing key acts for; the account's own
// key names none.
func TestOperatorIssuerAccounts(t *testing.T) {
	for _, c := range []struct {
		name                   string
		v                      operatorVariant
		wantResponse, wantUser func(w *operatorWorld) string
		wantUserIssuer         func(w *operatorWorld) nkeys.KeyPair
	}{
		{"signing keys", operatorVariant{},
			func(w *operatorWorld) string { return testsupport.PublicKey(t, w.auth) }, func(w *operatorWorld) string { return testsupport.PublicKey(t, w.app) },
			func(w *operatorWorld) nkeys.KeyPair { return w.appSK }},
		{"account keys", operatorVariant{calloutIdentity: true, targetKey: "identity"},
			func(*operatorWorld) string { return "" }, func(*operatorWorld) string { return "" },
			func(w *operatorWorld) nkeys.KeyPair { return w.app }},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, w := newOperatorEnv(t, envOptions{}, c.v)
			token, _ := e.serviceAccount("ns", "app", nil)
			serverKP := newKP(t, nkeys.CreateServer)
			rq := natsjwt.NewAuthorizationRequestClaims(testsupport.PublicKey(t, w.auth))
			rq.Audience = "nats-authorization-request"
			rq.UserNkey = testsupport.PublicKey(t, newKP(t, nkeys.CreateUser))
			rq.Server = natsjwt.ServerID{Name: "n1", ID: testsupport.PublicKey(t, serverKP)}
			rq.ConnectOptions.Token = token
			rq.ConnectOptions.JWT = w.sentinel
			rq.Expires = time.Now().Add(2 * time.Second).Unix()
			data, err := rq.Encode(serverKP)
			if err != nil {
				t.Fatal(err)
			}
			reply, d := e.handler.Handle(context.Background(), []byte(data), nats.Header{})
			if d.Result != callout.ResultAllowed {
				t.Fatalf("%s (%s: %v), want allowed", d.Result, d.Reason, d.Err)
			}
			rc, err := natsjwt.DecodeAuthorizationResponseClaims(string(reply))
			if err != nil {
				t.Fatal(err)
			}
			if rc.IssuerAccount != c.wantResponse(w) {
				t.Errorf("response issuer_account = %q, want %q", rc.IssuerAccount, c.wantResponse(w))
			}
			uc, err := natsjwt.DecodeUserClaims(rc.Jwt)
			if err != nil {
				t.Fatal(err)
			}
			if uc.IssuerAccount != c.wantUser(w) || uc.Issuer != testsupport.PublicKey(t, c.wantUserIssuer(w)) {
				t.Errorf("user JWT issuer %s, issuer_account %q; want %s, %q", uc.Issuer, uc.IssuerAccount, testsupport.PublicKey(t, c.wantUserIssuer(w)), c.wantUser(w))
			}
		})
	}
}

// Users of accounts without a callout (a NACK controller's, an administrator's) log in with
// their own credentials and never reach the service.
func TestOperatorStaticUsersBypassCallout(t *testing.T) {
	e, w := newOperatorEnv(t, envOptions{}, operatorVariant{})
	before := totalRequests(t, e)
	nackCreds := w.creds("nack", newKP(t, nkeys.CreateUser), w.nack, w.nack, nil)
	nack, err := nats.Connect(e.url, nats.UserCredentials(nackCreds), nats.Name("nack"))
	if err != nil {
		t.Fatalf("NACK user: %v", err)
	}
	defer nack.Close()
	sub, err := nack.SubscribeSync("$JS.API.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nack.Publish("$JS.API.INFO", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(2 * time.Second); err != nil {
		t.Errorf("NACK user: own message not received: %v", err)
	}
	if got := connAccount(t, e.server, "nack"); got != testsupport.PublicKey(t, w.nack) {
		t.Errorf("NACK user in account %s, want NACK", got)
	}
	admin := e.admin()
	if err := admin.Flush(); err != nil {
		t.Errorf("APP admin: %v", err)
	}
	if after := totalRequests(t, e); after != before {
		t.Errorf("callout requests went from %v to %v; static users must not reach the callout", before, after)
	}
	// A static user of the callout account that is not in auth_users goes through the callout
	// like the sentinel, so its own credentials alone do not let it in.
	stray := w.creds("stray", newKP(t, nkeys.CreateUser), w.auth, w.auth, nil)
	nc, err := nats.Connect(e.url, nats.UserCredentials(stray), nats.MaxReconnects(0))
	expectRefused(t, nc, err)
}

// Without default_sentinel a client must present sentinel credentials with its token;
// with it, the token alone is enough (TestPermissions and the others run that way).
func TestOperatorSentinel(t *testing.T) {
	e, w := newOperatorEnv(t, envOptions{}, operatorVariant{noDefaultSentinel: true})
	token, _ := e.serviceAccount("ns", "app", nil)
	before := totalRequests(t, e)
	nc, _, err := e.connect(token)
	expectRefused(t, nc, err)
	if after := totalRequests(t, e); after != before {
		t.Errorf("a token-only client reached the callout without default_sentinel (%v -> %v requests)", before, after)
	}

	sentinel, err := natsjwt.FormatUserConfig(w.sentinel, testsupport.Seed(t, w.sentinelUser))
	if err != nil {
		t.Fatal(err)
	}
	path := w.writeFile("sentinel.creds", sentinel)
	nc, _, err = e.connect(token, nats.UserCredentials(path), nats.Name("with-sentinel"))
	if err != nil {
		t.Fatalf("token with sentinel credentials: %v", err)
	}
	defer nc.Close()
	if got := connAccount(t, e.server, "with-sentinel"); got != testsupport.PublicKey(t, w.app) {
		t.Errorf("user placed in %s, want APP", got)
	}
	// The sentinel's credentials without a valid token are refused by the service.
	nc2, _, err := e.connect("", nats.UserCredentials(path))
	expectRefused(t, nc2, err)
	if got := requests(t, e, callout.ResultDenied, "no_token"); got != 1 {
		t.Errorf("requests_total{denied,no_token} = %v, want 1", got)
	}
}

// nats-server refuses a user placed in an account missing from allowed_accounts, whatever the
// service answers; with the callout account's JWT the service says so at start-up.
func TestOperatorTargetNotAllowed(t *testing.T) {
	e, w := newOperatorEnv(t, envOptions{}, operatorVariant{target: "OTHER", misconfigured: true})
	token, _ := e.serviceAccount("ns", "app", nil)
	nc, _, err := e.connect(token)
	expectRefused(t, nc, err)
	if got := requests(t, e, callout.ResultAllowed, callout.ReasonOK); got != 1 {
		t.Errorf("requests_total{allowed} = %v, want 1 (the server, not the service, refuses)", got)
	}
	err = callout.CheckOperatorSetup(callout.OperatorSetup{
		Credentials: credsOf(t, w, w.authSK), SigningKeys: parseKeys(t, testsupport.Seed(t, w.authSK)),
		TargetAccount: testsupport.PublicKey(t, w.other), TargetKeys: parseKeys(t, testsupport.Seed(t, w.otherSK)),
		CalloutAccountJWT: readAccountJWT(t, w.calloutJWTPath),
	})
	if !errors.Is(err, callout.ErrOperatorSetup) || !strings.Contains(err.Error(), "nsc edit authcallout --account AUTH --allowed-account "+testsupport.PublicKey(t, w.other)) {
		t.Errorf("got %v, want the allowed_accounts fix", err)
	}
}

// A scoped signing key cannot carry per-ServiceAccount permissions: nats-server refuses every
// client, and the check explains why before that happens.
func TestOperatorScopedSigningKey(t *testing.T) {
	e, w := newOperatorEnv(t, envOptions{}, operatorVariant{targetKey: "scoped", misconfigured: true})
	token, _ := e.serviceAccount("ns", "app", nil)
	nc, _, err := e.connect(token)
	expectRefused(t, nc, err)

	setup := callout.OperatorSetup{
		Credentials: credsOf(t, w, w.authSK), SigningKeys: parseKeys(t, testsupport.Seed(t, w.authSK)),
		TargetAccount: testsupport.PublicKey(t, w.app), TargetKeys: parseKeys(t, testsupport.Seed(t, w.appScoped)),
		TargetAccountJWT: readAccountJWT(t, w.appJWTPath),
	}
	err = callout.CheckOperatorSetup(setup)
	if !errors.Is(err, callout.ErrScopedSigningKey) || !errors.Is(err, callout.ErrOperatorSetup) {
		t.Fatalf("got %v, want ErrScopedSigningKey", err)
	}
	for _, want := range []string{testsupport.PublicKey(t, w.appScoped), `role "workloads"`, "APP (" + testsupport.PublicKey(t, w.app) + ")", "nsc edit account APP --sk generate", "NATS_TARGET_SIGNING_KEY_FILE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// Without the target account's JWT a scoped key cannot be told from an unscoped one.
	setup.TargetAccountJWT = nil
	if err := callout.CheckOperatorSetup(setup); err != nil {
		t.Errorf("without the account JWT: %v, want nil", err)
	}
}

// credsOf parses fresh .creds of the service's user, signed by signer for AUTH.
func credsOf(t *testing.T, w *operatorWorld, signer nkeys.KeyPair) *callout.Credentials {
	t.Helper()
	data, err := os.ReadFile(w.creds("svc", w.service, w.auth, signer, nil))
	if err != nil {
		t.Fatal(err)
	}
	c, err := callout.ParseCredentials(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckOperatorSetup(t *testing.T) {
	w := newOperatorWorld(t, true)
	jwtOf := func(kp nkeys.KeyPair, mut func(*natsjwt.AccountClaims)) *natsjwt.AccountClaims {
		ac := *w.accounts[testsupport.PublicKey(t, kp)]
		ac.SigningKeys = natsjwt.SigningKeys{}
		for k, v := range w.accounts[testsupport.PublicKey(t, kp)].SigningKeys {
			ac.SigningKeys[k] = v
		}
		ac.Authorization.AuthUsers = append(natsjwt.StringList(nil), ac.Authorization.AuthUsers...)
		ac.Authorization.AllowedAccounts = append(natsjwt.StringList(nil), ac.Authorization.AllowedAccounts...)
		if mut != nil {
			mut(&ac)
		}
		return &ac
	}
	xk, err := callout.ParseXKey(testsupport.Seed(t, w.xkey))
	if err != nil {
		t.Fatal(err)
	}
	otherX, err := callout.ParseXKey(testsupport.Seed(t, newKP(t, nkeys.CreateCurveKeys)))
	if err != nil {
		t.Fatal(err)
	}
	bareSeed, err := callout.ParseCredentials(testsupport.Seed(t, w.service))
	if err != nil {
		t.Fatal(err)
	}
	appUser := func() *callout.Credentials {
		data, err := os.ReadFile(w.creds("appuser", w.service, w.app, w.appSK, nil))
		if err != nil {
			t.Fatal(err)
		}
		c, err := callout.ParseCredentials(data)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}()
	good := func() callout.OperatorSetup {
		return callout.OperatorSetup{
			Credentials: credsOf(t, w, w.authSK), SigningKeys: parseKeys(t, testsupport.Seed(t, w.authSK)),
			TargetAccount: testsupport.PublicKey(t, w.app), TargetKeys: parseKeys(t, testsupport.Seed(t, w.appSK)), XKey: xk,
			CalloutAccountJWT: jwtOf(w.auth, nil), TargetAccountJWT: jwtOf(w.app, nil),
		}
	}
	twoKeys := append(append(testsupport.Seed(t, w.authSK), '\n'), testsupport.Seed(t, w.auth)...)
	for _, c := range []struct {
		name string
		mut  func(*callout.OperatorSetup)
		want string // "" means valid
	}{
		{"recommended", nil, ""},
		{"account keys", func(s *callout.OperatorSetup) {
			s.SigningKeys, s.TargetKeys = parseKeys(t, testsupport.Seed(t, w.auth)), parseKeys(t, testsupport.Seed(t, w.app))
		}, ""},
		{"no account JWTs", func(s *callout.OperatorSetup) { s.CalloutAccountJWT, s.TargetAccountJWT = nil, nil }, ""},
		{"users in the callout account, same key, one JWT", func(s *callout.OperatorSetup) {
			s.TargetAccount, s.TargetKeys, s.TargetAccountJWT = testsupport.PublicKey(t, w.auth), s.SigningKeys, nil
		}, ""},
		{"any account allowed", func(s *callout.OperatorSetup) {
			s.CalloutAccountJWT.Authorization.AllowedAccounts = natsjwt.StringList{natsjwt.AnyAccount}
		}, ""},
		{"xkey configured, account not encrypting", func(s *callout.OperatorSetup) { s.CalloutAccountJWT.Authorization.XKey = "" }, ""},

		{"bare seed", func(s *callout.OperatorSetup) { s.Credentials = bareSeed }, "must be a .creds file"},
		{"target is a name", func(s *callout.OperatorSetup) { s.TargetAccount = "APP" }, "NATS_ACCOUNT is not an account public key"},
		{"two callout keys", func(s *callout.OperatorSetup) { s.SigningKeys = parseKeys(t, twoKeys) }, "holds 2 account seeds"},
		{"signing key file holds the target's key", func(s *callout.OperatorSetup) {
			s.SigningKeys, s.CalloutAccountJWT = parseKeys(t, testsupport.Seed(t, w.app)), nil
		}, "NATS_SIGNING_KEY_FILE holds the key of the target account"},
		{"target key file holds the callout account's key", func(s *callout.OperatorSetup) {
			s.TargetKeys = parseKeys(t, testsupport.Seed(t, w.auth))
		}, "NATS_TARGET_SIGNING_KEY_FILE holds the key of the callout account"},
		{"one key for two accounts", func(s *callout.OperatorSetup) { s.TargetKeys = s.SigningKeys }, "hold the same key"},
		{"creds of another account", func(s *callout.OperatorSetup) { s.Credentials = appUser }, "is a user of account " + testsupport.PublicKey(t, w.app)},
		{"callout not enabled", func(s *callout.OperatorSetup) {
			s.CalloutAccountJWT.Authorization = natsjwt.ExternalAuthorization{}
		}, "has no auth callout: nsc edit authcallout --account AUTH --auth-user " + testsupport.PublicKey(t, w.service)},
		{"service not in auth_users", func(s *callout.OperatorSetup) {
			s.CalloutAccountJWT.Authorization.AuthUsers = natsjwt.StringList{testsupport.PublicKey(t, newKP(t, nkeys.CreateUser))}
		}, "not in auth_users of account AUTH"},
		{"callout signing key not registered", func(s *callout.OperatorSetup) {
			s.CalloutAccountJWT.SigningKeys = natsjwt.SigningKeys{}
		}, "nsc edit account AUTH --sk " + testsupport.PublicKey(t, w.authSK)},
		{"target not allowed", func(s *callout.OperatorSetup) {
			s.CalloutAccountJWT.Authorization.AllowedAccounts = natsjwt.StringList{testsupport.PublicKey(t, w.other)}
		}, "--allowed-account " + testsupport.PublicKey(t, w.app)},
		{"xkey missing", func(s *callout.OperatorSetup) { s.XKey = nil }, "NATS_XKEY_FILE is not set"},
		{"xkey differs", func(s *callout.OperatorSetup) { s.XKey = otherX }, "but NATS_XKEY_FILE holds " + otherX.PublicKey()},
		{"target JWT of another account", func(s *callout.OperatorSetup) { s.TargetAccountJWT = jwtOf(w.other, nil) }, "NATS_TARGET_ACCOUNT_JWT_FILE is account OTHER"},
		{"target key not registered", func(s *callout.OperatorSetup) {
			s.TargetKeys = parseKeys(t, testsupport.Seed(t, w.otherSK))
		}, "nsc edit account APP --sk " + testsupport.PublicKey(t, w.otherSK)},
		{"scoped target key", func(s *callout.OperatorSetup) {
			s.TargetKeys = parseKeys(t, testsupport.Seed(t, w.appScoped))
		}, "scoped signing key"},
		{"users in the callout account with a scoped key", func(s *callout.OperatorSetup) {
			s.CalloutAccountJWT.SigningKeys.AddScopedSigner(&natsjwt.UserScope{Kind: natsjwt.UserScopeType, Key: testsupport.PublicKey(t, w.authSK), Role: "r"})
			s.TargetAccount, s.TargetKeys, s.TargetAccountJWT = testsupport.PublicKey(t, w.auth), s.SigningKeys, nil
		}, "scoped signing key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := good()
			if c.mut != nil {
				c.mut(&s)
			}
			err := callout.CheckOperatorSetup(s)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("got %v, want valid", err)
			case c.want != "" && (err == nil || !errors.Is(err, callout.ErrOperatorSetup) || !strings.Contains(err.Error(), c.want)):
				t.Errorf("got %v, want an ErrOperatorSetup mentioning %q", err, c.want)
			}
			if err != nil {
				for _, kp := range []nkeys.KeyPair{w.auth, w.authSK, w.app, w.appSK, w.service} {
					if strings.Contains(err.Error(), string(testsupport.Seed(t, kp))) {
						t.Error("a seed appears in the error")
					}
				}
			}
		})
	}
}

func TestParseAccountJWT(t *testing.T) {
	w := newOperatorWorld(t, false)
	raw := w.accountJWT(w.app)
	userCreds, err := os.ReadFile(w.creds("u", newKP(t, nkeys.CreateUser), w.app, w.app, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, data string
		ok         bool
	}{
		{"raw", raw, true},
		{"raw with newline", raw + "\n", true},
		{"decorated", "-----BEGIN NATS ACCOUNT JWT-----\n" + raw + "\n------END NATS ACCOUNT JWT------\n", true},
		{"empty", "\n", false},
		{"garbage", "hello world", false},
		{"creds file", string(userCreds), false},
		{"account seed", string(testsupport.Seed(t, w.app)), false},
		{"operator JWT", func() string {
			tok, _ := natsjwt.NewOperatorClaims(testsupport.PublicKey(t, w.operator)).Encode(w.operator)
			return tok
		}(), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ac, err := callout.ParseAccountJWT([]byte(c.data))
			switch {
			case c.ok && (err != nil || ac.Subject != testsupport.PublicKey(t, w.app)):
				t.Errorf("got %v, %v; want APP's claims", ac, err)
			case !c.ok && err == nil:
				t.Errorf("parsed %q as an account JWT", c.name)
			case err != nil && strings.Contains(err.Error(), string(testsupport.Seed(t, w.app))):
				t.Error("the seed appears in the error")
			}
		})
	}
}

func TestCredentialsAccount(t *testing.T) {
	w := newOperatorWorld(t, false)
	for _, c := range []struct {
		name   string
		signer nkeys.KeyPair
	}{{"signed by the account", w.auth}, {"signed by a signing key", w.authSK}} {
		t.Run(c.name, func(t *testing.T) {
			if got := credsOf(t, w, c.signer).Account(); got != testsupport.PublicKey(t, w.auth) {
				t.Errorf("Account() = %s, want AUTH %s", got, testsupport.PublicKey(t, w.auth))
			}
		})
	}
	bare, err := callout.ParseCredentials(testsupport.Seed(t, w.service))
	if err != nil {
		t.Fatal(err)
	}
	if got := bare.Account(); got != "" {
		t.Errorf("bare seed: Account() = %q, want empty", got)
	}
}

func TestParseSigningKeysExplainsWrongKinds(t *testing.T) {
	for _, c := range []struct {
		name string
		kp   nkeys.KeyPair
		want string
	}{
		{"operator", newKP(t, nkeys.CreateOperator), "an operator key signs accounts"},
		{"user", newKP(t, nkeys.CreateUser), "a user seed is a login"},
		{"curve", newKP(t, nkeys.CreateCurveKeys), "signing keys are account seeds"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := callout.ParseSigningKeys(testsupport.Seed(t, c.kp))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error mentioning %q", err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), string(testsupport.Seed(t, c.kp))) {
				t.Error("the seed appears in the error")
			}
		})
	}
}

func TestOperatorHandlerConfig(t *testing.T) {
	ring := parseKeys(t, testsupport.Seed(t, newKP(t, nkeys.CreateAccount)))
	base := callout.HandlerConfig{
		Verifier: nopVerifier{}, Policies: nopPolicies{}, SigningKeys: func() *callout.KeyRing { return ring },
		Account: testsupport.PublicKey(t, newKP(t, nkeys.CreateAccount)),
	}
	for _, c := range []struct {
		name string
		mut  func(*callout.HandlerConfig)
		ok   bool
	}{
		{"valid", func(*callout.HandlerConfig) {}, true},
		{"account by name", func(c *callout.HandlerConfig) { c.Account = "APP" }, false},
		{"no callout account", func(c *callout.HandlerConfig) { c.Operator.CalloutAccount = nil }, false},
		{"no target keys", func(c *callout.HandlerConfig) { c.Operator.TargetKeys = nil }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			cfg.Operator = &callout.OperatorConfig{
				CalloutAccount: func() string { return "" },
				TargetKeys:     func() *callout.KeyRing { return ring },
			}
			c.mut(&cfg)
			if _, err := callout.NewHandler(cfg); (err == nil) != c.ok {
				t.Errorf("NewHandler: %v, want ok=%v", err, c.ok)
			}
		})
	}
}

type nopVerifier struct{}

func (nopVerifier) Verify(context.Context, string) (kube.Identity, error) {
	return kube.Identity{}, errors.New("not used")
}

type nopPolicies struct{}

func (nopPolicies) Policy(kube.Identity) (kube.Policy, error) {
	return kube.Policy{}, errors.New("not used")
}

// An operator that requires signing keys (nsc edit operator --require-signing-keys) no longer
// accepts users signed by an account's own key: the target key must be a signing key.
func TestOperatorStrictRefusesAccountKey(t *testing.T) {
	e, _ := newOperatorEnv(t, envOptions{}, operatorVariant{strict: true, targetKey: "identity"})
	token, _ := e.serviceAccount("ns", "app", nil)
	nc, _, err := e.connect(token)
	expectRefused(t, nc, err)
}

func TestCheckOperatorSetupTenants(t *testing.T) {
	w := newOperatorWorld(t, false)
	tenant, tenantSK, stranger := newKP(t, nkeys.CreateAccount), newKP(t, nkeys.CreateAccount), newKP(t, nkeys.CreateAccount)
	tenantPub := testsupport.PublicKey(t, tenant)
	tenantJWT := func(scoped bool) *natsjwt.AccountClaims {
		ac := natsjwt.NewAccountClaims(tenantPub)
		ac.Name = "TEAM_A"
		if scoped {
			scope := natsjwt.NewUserScope()
			scope.Key = testsupport.PublicKey(t, tenantSK)
			ac.SigningKeys.AddScopedSigner(scope)
		} else {
			ac.SigningKeys.Add(testsupport.PublicKey(t, tenantSK))
		}
		return ac
	}
	calloutJWT := func(allow bool) *natsjwt.AccountClaims {
		ac := *w.accounts[testsupport.PublicKey(t, w.auth)]
		ac.Authorization.AllowedAccounts = append(natsjwt.StringList(nil), ac.Authorization.AllowedAccounts...)
		if allow {
			ac.Authorization.AllowedAccounts.Add(tenantPub)
		}
		return &ac
	}
	for _, c := range []struct {
		name    string
		tenant  callout.TenantAccount
		allowed bool
		want    string
	}{
		{"signing key", callout.TenantAccount{Account: tenantPub, Keys: parseKeys(t, testsupport.Seed(t, tenantSK)), JWT: tenantJWT(false)}, true, ""},
		{"account key", callout.TenantAccount{Account: tenantPub, Keys: parseKeys(t, testsupport.Seed(t, tenant)), JWT: tenantJWT(false)}, true, ""},
		{"no JWT", callout.TenantAccount{Account: tenantPub, Keys: parseKeys(t, testsupport.Seed(t, stranger))}, true, ""},
		{"no key", callout.TenantAccount{Account: tenantPub}, true, ""},
		{"not allowed", callout.TenantAccount{Account: tenantPub, Keys: parseKeys(t, testsupport.Seed(t, tenantSK))}, false, "not in allowed_accounts"},
		{"foreign key", callout.TenantAccount{Account: tenantPub, Keys: parseKeys(t, testsupport.Seed(t, stranger)), JWT: tenantJWT(false)}, true, "neither account TEAM_A"},
		{"scoped key", callout.TenantAccount{Account: tenantPub, Keys: parseKeys(t, testsupport.Seed(t, tenantSK)), JWT: tenantJWT(true)}, true, "scoped signing key"},
		{"callout key", callout.TenantAccount{Account: tenantPub, Keys: parseKeys(t, testsupport.Seed(t, w.authSK))}, true, "key of the callout account"},
		{"JWT of another account", callout.TenantAccount{Account: testsupport.PublicKey(t, stranger), Keys: parseKeys(t, testsupport.Seed(t, tenantSK)), JWT: tenantJWT(false)}, false, "not in allowed_accounts"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := callout.OperatorSetup{
				Credentials: credsOf(t, w, w.authSK), SigningKeys: parseKeys(t, testsupport.Seed(t, w.authSK)),
				TargetAccount: testsupport.PublicKey(t, w.app), TargetKeys: parseKeys(t, testsupport.Seed(t, w.appSK)),
				CalloutAccountJWT: calloutJWT(c.allowed), Tenants: []callout.TenantAccount{c.tenant},
			}
			err := callout.CheckOperatorSetup(s)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("got %v, want the setup accepted", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, callout.ErrOperatorSetup)):
				t.Fatalf("got %v, want an ErrOperatorSetup with %q", err, c.want)
			}
		})
	}
}
