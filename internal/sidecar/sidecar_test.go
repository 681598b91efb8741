package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/atomicfile"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/sidecar"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

const issuerURL = "https://kubernetes.default.svc"

// pod is one NATS pod's worth of parts: a nats-server in server-config mode sending its auth
// callouts to the sidecar, the sidecar's mounted key files, and the cluster it reads.
type pod struct {
	t        *testing.T
	dir      string
	server   *server.Server
	users    [2]nkeys.KeyPair // service users the server knows; the sidecar starts as users[0]
	system   nkeys.KeyPair    // a user of the system account (NATS_SYSTEM_CREDS_FILE)
	issuer   *kubefake.TokenIssuer
	cluster  *kubefake.MemoryCluster
	settings settings.Serve
	deps     sidecar.Deps
	confText string // the nats-server config
	logs     *testsupport.LogBuffer
	http     string
}

func newKey(t *testing.T, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

func (p *pod) writeSeed(name string, kp nkeys.KeyPair) string {
	p.t.Helper()
	seed, err := kp.Seed()
	if err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(p.dir, name)
	if err := atomicfile.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// newPod starts the nats-server and prepares the sidecar's settings, files and dependencies the
// way main does for a real pod, with in-memory stand-ins only for the API server and the
// token issuer.
func newPod(t *testing.T) *pod {
	p := &pod{t: t, dir: t.TempDir(), logs: &testsupport.LogBuffer{}}
	var userPubs [2]string
	for i := range p.users {
		p.users[i], userPubs[i] = newKey(t, nkeys.CreateUser)
	}
	account, accountPub := newKey(t, nkeys.CreateAccount)
	xkey, xkeyPub := newKey(t, nkeys.CreateCurveKeys)
	var systemPub string
	p.system, systemPub = newKey(t, nkeys.CreateUser)
	conf := fmt.Sprintf(`listen: "127.0.0.1:-1"
server_name: pod-0
accounts { AUTH: { users: [ { nkey: %q }, { nkey: %q } ] }, APP: {}, SYS: { users: [ { nkey: %q } ] } }
system_account: SYS
authorization { auth_callout { issuer: %q, auth_users: [ %q, %q, %q ], account: AUTH, xkey: %q } }
`, userPubs[0], userPubs[1], systemPub, accountPub, userPubs[0], userPubs[1], systemPub, xkeyPub)
	p.server, _ = testsupport.StartNATS(t, conf)
	p.confText = conf

	var err error
	if p.issuer, err = kubefake.NewECDSATokenIssuer(issuerURL); err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(p.issuer.JWKSHandler())
	t.Cleanup(jwks.Close)
	if p.cluster, err = kubefake.NewMemoryCluster(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cluster.Close)

	p.settings = settings.ServeDefaults()
	p.settings.NATSURL = p.server.ClientURL()
	p.settings.CredsFile = p.writeSeed("service.nk", p.users[0])
	p.settings.SigningKeyFile = p.writeSeed("issuer.nk", account)
	p.settings.XKeyFile = p.writeSeed("xkey.nk", xkey)
	p.settings.Account = "APP"
	p.settings.JWKSURL = jwks.URL
	p.settings.Issuer = issuerURL
	if err := p.settings.Validate(); err != nil {
		t.Fatal(err)
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.http = "http://" + ln.Addr().String()
	p.deps = sidecar.Deps{
		Client: p.cluster.Client(), JWKSURL: jwks.URL, HTTPClient: jwks.Client(), Listener: ln,
		Log:      slog.New(slog.NewJSONHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: prometheus.NewRegistry(), Version: "v-test", Commit: "c-test",
	}
	return p
}

// run starts the sidecar and stops it (checking that Run returns nil) when the test ends.
func (p *pod) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sidecar.Run(ctx, p.settings, p.deps) }()
	p.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				p.t.Errorf("Run returned %v after cancellation", err)
			}
		case <-time.After(15 * time.Second):
			p.t.Error("Run did not return within 15s of cancellation")
		}
	})
}

func (p *pod) get(path string) (int, string) {
	p.t.Helper()
	resp, err := http.Get(p.http + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// token creates a ServiceAccount and returns a token for it.
func (p *pod) token(ns, name string, annotations map[string]string) string {
	p.t.Helper()
	sa, err := p.cluster.Create(context.Background(), &kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Annotations: annotations,
	}})
	if err != nil {
		p.t.Fatal(err)
	}
	tok, err := p.issuer.ServiceAccountToken(ns, name, string(sa.UID), []string{"nats"}, time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	return tok
}

// serviceUser returns the nkey the sidecar is connected to nats-server with, or "".
func (p *pod) serviceUser() string {
	connz, err := p.server.Connz(&server.ConnzOptions{Account: "AUTH", Username: true})
	if err != nil || len(connz.Conns) != 1 {
		return ""
	}
	return connz.Conns[0].AuthorizedUser
}

func TestRun(t *testing.T) {
	p := newPod(t)
	tok := p.token("team-a", "app", map[string]string{"nats.io/allowed-pub-subjects": "shared.events"})
	p.run()

	testsupport.WaitFor(t, "/readyz answers 200", 10*time.Second, func() bool { code, _ := p.get("/readyz"); return code == 200 })
	_, body := p.get("/readyz")
	for _, want := range []string{"[+] informer ok", "[+] pods ok", "[+] jwks ok", "[+] nats ok", "[+] signing_key ok"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz lacks %q:\n%s", want, body)
		}
	}
	if code, body := p.get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}

	// Allowed: the annotation's subject and the namespace default; refused: another namespace.
	errs := make(chan error, 4)
	nc, err := nats.Connect(p.settings.NATSURL, nats.Token(tok), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("connect with a valid token: %v", err)
	}
	defer nc.Close()
	for _, subj := range []string{"shared.events", "team-a.orders"} {
		if err := nc.Publish(subj, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish("team-b.orders", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), `Publish to "team-b.orders"`) {
			t.Errorf("violation %v, want one for team-b.orders only", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("publishing outside the grant was not refused")
	}
	if _, err := nats.Connect(p.settings.NATSURL, nats.Token("not-a-token"), nats.NoReconnect()); err == nil {
		t.Error("a malformed token was accepted")
	}

	_, metrics := p.get("/metrics")
	for _, want := range []string{
		`nats_callout_build_info{commit="c-test",goversion=`,
		`nats_callout_requests_total{account="APP",reason="ok",result="allowed"} 1`,
		`nats_callout_requests_total{account="",reason="malformed_token",result="denied"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestRunRotatesCredentials changes the mounted service login the way the kubelet does and
// expects the sidecar to move its NATS connection to the new user without a restart.
func TestRunRotatesCredentials(t *testing.T) {
	p := newPod(t)
	p.run()
	first, _ := p.users[0].PublicKey()
	second, _ := p.users[1].PublicKey()
	testsupport.WaitFor(t, "connected as the first user", 10*time.Second, func() bool { return p.serviceUser() == first })

	p.writeSeed("service.nk", p.users[1])
	testsupport.WaitFor(t, "connected as the second user only", 20*time.Second, func() bool { return p.serviceUser() == second })
	testsupport.WaitFor(t, "/readyz answers 200 after the rotation", 10*time.Second, func() bool { code, _ := p.get("/readyz"); return code == 200 })
	if !strings.Contains(p.logs.String(), "NATS credentials reloaded") {
		t.Error("the reload was not logged")
	}
}

func TestRunStopsOnBadFiles(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(*settings.Serve, string)
		want string
	}{
		{"missing signing key", func(c *settings.Serve, dir string) { c.SigningKeyFile = filepath.Join(dir, "none") }, "NATS_SIGNING_KEY_FILE"},
		{"creds not a seed", func(c *settings.Serve, _ string) { c.CredsFile = c.SigningKeyFile }, "NATS_CREDS_FILE"},
		{"xkey not a curve key", func(c *settings.Serve, _ string) { c.XKeyFile = c.SigningKeyFile }, "NATS_XKEY_FILE"},
		{"system creds not a user", func(c *settings.Serve, _ string) { c.SystemCredsFile = c.SigningKeyFile }, "NATS_SYSTEM_CREDS_FILE"},
		// Deps.PodStatus is nil in newPod.
		{"source pinning without a pod status client", func(c *settings.Serve, _ string) { c.BindSourceIP = true }, "BIND_SOURCE_IP"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPod(t)
			tt.set(&p.settings, p.dir)
			err := sidecar.Run(context.Background(), p.settings, p.deps)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// TestRunRevokes checks live revocation through the whole sidecar: a ServiceAccount change in
// the cluster closes the connections it took the grant from, the client reconnects with the
// token it holds and gets the grant as it now reads, or a refusal.
func TestRunRevokes(t *testing.T) {
	p := newPod(t)
	p.settings.SystemCredsFile = p.writeSeed("system.nk", p.system)
	pub := "nats.io/allowed-pub-subjects"
	tok := p.token("team-a", "app", map[string]string{pub: "orders.new,orders.paid"})
	other := p.token("team-a", "web", nil)
	p.run()
	testsupport.WaitFor(t, "/readyz without a revocation warning", 10*time.Second, func() bool {
		code, body := p.get("/readyz")
		return code == 200 && !strings.Contains(body, "revocation")
	})

	errs := make(chan error, 16)
	reconnects := make(chan struct{}, 16)
	nc, err := nats.Connect(p.settings.NATSURL, nats.Token(tok), nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1),
		nats.ReconnectHandler(func(*nats.Conn) { reconnects <- struct{}{} }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	neighbour, err := nats.Connect(p.settings.NATSURL, nats.Token(other), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer neighbour.Close()

	// A grant removed: the connection is closed, and back with the narrowed grant.
	sa, err := p.cluster.Get(context.Background(), "team-a", "app")
	if err != nil {
		t.Fatal(err)
	}
	sa.Annotations = map[string]string{pub: "orders.new"}
	if _, err := p.cluster.Update(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reconnects:
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed within 5s of the grant's narrowing")
	}
	for _, subj := range []string{"orders.new", "orders.paid"} {
		if err := nc.Publish(subj, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), `Publish to "orders.paid"`) {
			t.Errorf("violation %v, want one for orders.paid", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the reconnected client still holds the removed grant")
	}

	// The ServiceAccount deleted: closed, and refused from then on.
	if err := p.cluster.Delete(context.Background(), "team-a", "app"); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "connection closed and not back", 5*time.Second, func() bool { return !nc.IsConnected() })
	if !neighbour.IsConnected() {
		t.Error("a neighbour ServiceAccount's connection was closed")
	}
	_, metrics := p.get("/metrics")
	for _, want := range []string{
		`nats_callout_revocations_total{reason="grant_narrowed"} 1`,
		`nats_callout_revocations_total{reason="serviceaccount_deleted"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if logs := p.logs.String(); !strings.Contains(logs, `"msg":"connection revoked","reason":"grant_narrowed","namespace":"team-a","serviceaccount":"app"`) {
		t.Errorf("no decision-log line for the revoked connection:\n%s", logs)
	}
}

// TestRunWithoutRevocation checks that without NATS_SYSTEM_CREDS_FILE start-up says how long a
// grant outlives a change.
func TestRunWithoutRevocation(t *testing.T) {
	p := newPod(t)
	p.run()
	testsupport.WaitFor(t, "the start-up warning", 10*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "live revocation is off (NATS_SYSTEM_CREDS_FILE is not set)")
	})
}

// TestRunRotatesSystemCredentials swaps the mounted system account user the way the kubelet
// does: live revocation logs in again as the new user, and keeps working.
func TestRunRotatesSystemCredentials(t *testing.T) {
	p := newPod(t)
	second, secondPub := newKey(t, nkeys.CreateUser)
	// The server knows both system users from the start, as after a config roll.
	p.server.Shutdown()
	conf := strings.Replace(p.confText, `SYS: { users: [ {`, fmt.Sprintf(`SYS: { users: [ { nkey: %q }, {`, secondPub), 1)
	conf = strings.Replace(conf, "auth_users: [ ", fmt.Sprintf("auth_users: [ %q, ", secondPub), 1)
	p.server, _ = testsupport.StartNATS(t, conf)
	p.settings.NATSURL = p.server.ClientURL()
	p.settings.SystemCredsFile = p.writeSeed("system.nk", p.system)
	p.run()
	first, _ := p.system.PublicKey()
	systemUser := func() string {
		connz, err := p.server.Connz(&server.ConnzOptions{Account: "SYS", Username: true})
		if err != nil || len(connz.Conns) != 1 {
			return ""
		}
		return connz.Conns[0].AuthorizedUser
	}
	testsupport.WaitFor(t, "revocation logged in as the first system user", 10*time.Second, func() bool { return systemUser() == first })

	p.writeSeed("system.nk", second)
	testsupport.WaitFor(t, "revocation logged in as the second system user only", 20*time.Second, func() bool { return systemUser() == secondPub })
	if !strings.Contains(p.logs.String(), "system account credentials reloaded") {
		t.Error("the reload was not logged")
	}

	// And it still revokes.
	tok := p.token("team-a", "app", nil)
	nc, err := nats.Connect(p.settings.NATSURL, nats.Token(tok), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := p.cluster.Delete(context.Background(), "team-a", "app"); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "connection closed after the rotation", 5*time.Second, nc.IsClosed)
}

// TestRunBoundPods wires VERIFY_BOUND_OBJECTS and BIND_SOURCE_IP: a token bound to a pod whose
// IP is the client's logs in until the pod is deleted.
func TestRunBoundPods(t *testing.T) {
	p := newPod(t)
	p.settings.BindSourceIP = true
	p.deps.PodStatus = p.cluster
	p.token("team-a", "app", nil)
	pod, err := p.cluster.CreatePod(context.Background(), "team-a", "app-0", "", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	claims := p.issuer.Claims("team-a", "app", "uid-team-a-app", []string{"nats"}, time.Hour)
	claims.Kubernetes.Pod = &kube.ObjectRef{Name: pod.Name, UID: string(pod.UID)}
	tok, err := p.issuer.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	p.run()
	testsupport.WaitFor(t, "/readyz answers 200", 10*time.Second, func() bool { code, _ := p.get("/readyz"); return code == 200 })
	nc, err := nats.Connect(p.settings.NATSURL, nats.Token(tok), nats.NoReconnect())
	if err != nil {
		t.Fatalf("token bound to a pod at the client's address: %v", err)
	}
	nc.Close()
	if err := p.cluster.DeletePod(context.Background(), "team-a", "app-0"); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "token of the deleted pod refused", 10*time.Second, func() bool {
		nc, err := nats.Connect(p.settings.NATSURL, nats.Token(tok), nats.NoReconnect())
		if err == nil {
			nc.Close()
		}
		return errors.Is(err, nats.ErrAuthorization)
	})
	if !strings.Contains(p.logs.String(), `"reason":"pod_not_found"`) {
		t.Errorf("no pod_not_found decision in the log:\n%s", p.logs.String())
	}
}
