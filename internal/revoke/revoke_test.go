package revoke_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/revoke"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// Users of the test server: connections named as the callout names its users, and one other.
var (
	api    = kube.Identity{Namespace: "shop", Name: "api", UID: "sa-1", PodName: "api-1", PodUID: "pod-1"}
	apiTwo = kube.Identity{Namespace: "shop", Name: "api", UID: "sa-1", PodName: "api-2", PodUID: "pod-2"}
	web    = kube.Identity{Namespace: "shop", Name: "web", UID: "sa-2"}
	bank   = kube.Identity{Namespace: "bank", Name: "api", UID: "sa-3"}
	// Probes connect last, so they come last in a sweep (connections are listed by cid): once
	// a probe's revocation has closed it, every change notified before it has been swept.
	probes = []kube.Identity{{Namespace: "probe", Name: "one", UID: "p-1"}, {Namespace: "probe", Name: "two", UID: "p-2"}}
)

// world is a real nats-server and one client per user of it.
type world struct {
	url     string
	sysSeed []byte
	conns   map[string]*nats.Conn
}

func (w *world) start(t *testing.T, url string) {
	t.Helper()
	w.url = url
	names := []string{api.ConnectionName(), apiTwo.ConnectionName(), web.ConnectionName(), bank.ConnectionName(), "alice"}
	for _, p := range probes {
		names = append(names, p.ConnectionName())
	}
	for _, name := range names {
		nc, err := nats.Connect(url, nats.UserInfo(name, "pw"), nats.NoReconnect())
		if err != nil {
			t.Fatalf("connect %s: %v", name, err)
		}
		t.Cleanup(nc.Close)
		w.conns[name] = nc
	}
}

func startRevoker(t *testing.T, url string, seed []byte, logs *testsupport.LogBuffer) (*revoke.Revoker, *prometheus.Registry) {
	t.Helper()
	creds, err := callout.ParseCredentials(seed)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r, err := revoke.New(revoke.Config{
		URL: url, Credentials: func() *callout.Credentials { return creds }, Registerer: reg,
		Gather: 300 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	testsupport.RunUntilCleanup(t, r.Run)
	testsupport.WaitFor(t, "revoker connected", 10*time.Second, func() bool { return r.Err() == nil })
	return r, reg
}

// TestRevoker closes the connections of the identities each change names, on a real
// nats-server, and leaves every other connection up.
func TestRevoker(t *testing.T) {
	sys, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	var users strings.Builder
	for _, id := range append([]kube.Identity{api, apiTwo, web, bank}, probes...) {
		fmt.Fprintf(&users, "{user: %q, password: pw}\n", id.ConnectionName())
	}
	srv, _ := testsupport.StartNATS(t, fmt.Sprintf(`
listen: 127.0.0.1:-1
server_name: n1
accounts {
  SYS: { users: [ {nkey: %s} ] }
  APP: { users: [ %s {user: alice, password: pw} ] }
}
system_account: SYS
`, testsupport.PublicKey(t, sys), users.String()))
	w := &world{sysSeed: testsupport.Seed(t, sys), conns: map[string]*nats.Conn{}}
	w.start(t, srv.ClientURL())

	logs := &testsupport.LogBuffer{}
	r, reg := startRevoker(t, w.url, w.sysSeed, logs)
	// A second sidecar seeing the same changes: the two must not count a connection twice.
	logs2 := &testsupport.LogBuffer{}
	r2, reg2 := startRevoker(t, w.url, w.sysSeed, logs2)

	up := func(id string) bool { return w.conns[id].IsConnected() }
	// swept waits until every change notified so far has been swept, by revoking probe p.
	swept := func(p kube.Identity) {
		t.Helper()
		r.Notify(kube.Revocation{Reason: kube.RevokeServiceAccountRecreated, Namespace: p.Namespace, Name: p.Name, UID: p.UID})
		testsupport.WaitFor(t, "the probe's connection closed", 5*time.Second, func() bool { return !up(p.ConnectionName()) })
	}
	revoked := func(reason string) float64 {
		return testsupport.Metric(t, reg, "nats_callout_revocations_total", "reason", reason) +
			testsupport.Metric(t, reg2, "nats_callout_revocations_total", "reason", reason)
	}

	// A pod goes: only the connection bound to it.
	rv := kube.Revocation{Reason: kube.RevokePodDeleted, Namespace: "shop", PodUID: "pod-1"}
	r.Notify(rv)
	r2.Notify(rv)
	testsupport.WaitFor(t, "api-1's connection closed", 5*time.Second, func() bool { return !up(api.ConnectionName()) })
	testsupport.WaitFor(t, "revocation counted", 5*time.Second, func() bool { return revoked(kube.RevokePodDeleted) == 1 })
	for _, id := range []string{apiTwo.ConnectionName(), web.ConnectionName(), bank.ConnectionName(), "alice"} {
		if !up(id) {
			t.Errorf("%s closed by a revocation of pod-1", id)
		}
	}
	// The ServiceAccount goes: its other pod's connection too, not bank/api (same name) nor web.
	r.Notify(kube.Revocation{Reason: kube.RevokeServiceAccountDeleted, Namespace: "shop", Name: "api", UID: "sa-1"})
	testsupport.WaitFor(t, "api-2's connection closed", 5*time.Second, func() bool { return !up(apiTwo.ConnectionName()) })
	swept(probes[0])
	for _, id := range []string{web.ConnectionName(), bank.ConnectionName(), "alice"} {
		if !up(id) {
			t.Errorf("%s closed by a revocation of shop/api", id)
		}
	}
	if got := revoked(kube.RevokeServiceAccountDeleted); got != 1 {
		t.Errorf("serviceaccount_deleted revocations = %v, want 1", got)
	}
	// The namespace moves: a connection already in the account it moved to stays (it logged in
	// since the move); one elsewhere is closed. Only the namespace's connections.
	r.Notify(kube.Revocation{Reason: kube.RevokeAccountMoved, Namespace: "shop", Account: "APP"})
	swept(probes[1])
	if !up(web.ConnectionName()) {
		t.Error("a connection already in the namespace's new account was closed")
	}
	r.Notify(kube.Revocation{Reason: kube.RevokeAccountMoved, Namespace: "shop", Account: "TEAM_B"})
	testsupport.WaitFor(t, "shop/web's connection closed", 5*time.Second, func() bool { return !up(web.ConnectionName()) })
	for _, id := range []string{bank.ConnectionName(), "alice"} {
		if !up(id) {
			t.Errorf("%s closed by shop's move", id)
		}
	}
	// Either sidecar may have closed api-1's connection first.
	log := logs.String() + logs2.String()
	for _, want := range []string{`"msg":"connection revoked"`, `"reason":"pod_deleted"`, `"pod":"api-1"`, `"server":"n1"`, `"client_id":`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
}

// TestRevokerWrongUser checks that a NATS_SYSTEM_CREDS_FILE naming a user outside the system
// account is reported (readiness, log, failure counter) and closes nothing.
func TestRevokerWrongUser(t *testing.T) {
	sys, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	other, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	// "other" is a user of APP, not of the system account: it cannot list connections.
	srv, _ := testsupport.StartNATS(t, fmt.Sprintf(`
listen: 127.0.0.1:-1
accounts {
  SYS: { users: [ {nkey: %s} ] }
  APP: { users: [ {nkey: %s}, {user: %q, password: pw} ] }
}
system_account: SYS
`, testsupport.PublicKey(t, sys), testsupport.PublicKey(t, other), web.ConnectionName()))
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(web.ConnectionName(), "pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	logs := &testsupport.LogBuffer{}
	r, reg := startRevoker(t, srv.ClientURL(), testsupport.Seed(t, other), logs)
	r.Notify(kube.Revocation{Reason: kube.RevokeServiceAccountDeleted, Namespace: "shop", Name: "web", UID: "sa-2"})
	testsupport.WaitFor(t, "failed sweep", 10*time.Second, func() bool {
		return testsupport.Metric(t, reg, "nats_callout_revocation_failures_total") >= 1
	})
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "NATS_SYSTEM_CREDS_FILE") {
		t.Errorf("Err() = %v, want one naming NATS_SYSTEM_CREDS_FILE", err)
	}
	if !nc.IsConnected() {
		t.Error("connection closed by a revoker that is not a system account user")
	}
	if !strings.Contains(logs.String(), "cannot revoke connections yet; retrying") {
		t.Errorf("no retry logged:\n%s", logs.String())
	}
}
