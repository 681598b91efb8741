//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// revocationCluster is three nats-servers in a cluster with a sidecar next to each, every
// sidecar with a system account user (NATS_SYSTEM_CREDS_FILE).
type revocationCluster struct {
	servers  []*natsServer
	sidecars []*calloutService
}

func newRevocationCluster(t *testing.T, env ...string) *revocationCluster {
	t.Helper()
	dir := testDir(t)
	service, issuer, system := newUserKey(t), newAccountKey(t), newUserKey(t)
	files := map[string][]byte{keyService: seedFile(t, service), keyIssuer: seedFile(t, issuer), keySystem: seedFile(t, system)}
	names := []string{"nats-a", "nats-b", "nats-c"}
	routePorts := []int{freePort(t), freePort(t), freePort(t)}
	c := &revocationCluster{}
	for i, name := range names {
		c.servers = append(c.servers, startNATS(t, dir, name, natsConf{
			name: name, issuer: pubOf(t, issuer), serviceUsers: []string{pubOf(t, service)}, systemUser: pubOf(t, system),
			cluster: &clusterConf{name: "revoke", port: routePorts[i], routes: routePorts},
		}))
	}
	for _, s := range c.servers {
		eventually(t, 30*time.Second, s.name+" routed to both peers", func() error {
			n, err := s.routes()
			if err == nil && n < len(c.servers)-1 {
				err = fmt.Errorf("%d routes", n)
			}
			return err
		})
	}
	for _, s := range c.servers {
		vol := newSecretVolume(t, fmt.Sprintf("%s/secret-%s", dir, s.name), files)
		c.sidecars = append(c.sidecars, startService(t, dir, "callout-"+s.name, s.url(), vol, serviceOpts{
			env: append([]string{"NATS_SYSTEM_CREDS_FILE=" + vol.path(keySystem)}, env...),
		}))
	}
	for _, sc := range c.sidecars {
		eventually(t, 30*time.Second, sc.name+" ready without a revocation warning", func() error {
			_, body, err := sc.get("/readyz")
			if err == nil && strings.Contains(body, "revocation") {
				err = fmt.Errorf("%s", body)
			}
			return err
		})
	}
	return c
}

// revoked sums nats_callout_revocations_total{reason} over the sidecars.
func (c *revocationCluster) revoked(t *testing.T, reason string) float64 {
	t.Helper()
	var n float64
	for _, sc := range c.sidecars {
		n += sc.metrics(t).sum("nats_callout_revocations_total", "reason", reason)
	}
	return n
}

// heldConn is a client pinned to one server that reconnects there with the token it holds, and
// reports when it is disconnected and back.
type heldConn struct {
	nc                       *nats.Conn
	disconnected, reconnects chan time.Time
	errs                     chan error
}

func holdConn(t *testing.T, s *natsServer, tok string) *heldConn {
	t.Helper()
	h := &heldConn{disconnected: make(chan time.Time, 16), reconnects: make(chan time.Time, 16), errs: make(chan error, 16)}
	var err error
	h.nc, err = nats.Connect(s.url(), nats.Token(tok), nats.IgnoreDiscoveredServers(),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectJitter(0, 0),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { h.disconnected <- time.Now() }),
		nats.ReconnectHandler(func(*nats.Conn) { h.reconnects <- time.Now() }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { h.errs <- err }))
	if err != nil {
		t.Fatalf("connect to %s: %v", s.name, err)
	}
	t.Cleanup(h.nc.Close)
	if got := h.nc.ConnectedServerName(); got != s.name {
		t.Fatalf("connected to %s, want %s", got, s.name)
	}
	return h
}

// closedWithin waits for the connection to be closed by the server and returns how long after
// the API change at changed it was.
func (h *heldConn) closedWithin(t *testing.T, what string, changed time.Time, limit time.Duration) time.Duration {
	t.Helper()
	select {
	case at := <-h.disconnected:
		took := at.Sub(changed)
		t.Logf("%s: API change to closed connection: %v", what, took.Round(time.Millisecond))
		return took
	case <-time.After(limit):
		t.Fatalf("%s: connection still open %v after the API change", what, limit)
		return 0
	}
}

// staysOut checks that the client, reconnecting every 100 ms, does not get back in within 2 s.
func (h *heldConn) staysOut(t *testing.T, after string) {
	t.Helper()
	select {
	case <-h.reconnects:
		t.Errorf("the client got back in after %s", after)
	case <-time.After(2 * time.Second):
	}
}

// Scenario: a grant that ends ends now. A connection held on nats-b is closed when an
// annotation it relies on is removed (and comes back with the narrowed grant), and when its
// ServiceAccount is deleted (and stays out), each within 5 s, while a neighbour
// ServiceAccount's connection on the same server stays up; the three sidecars count each closed
// connection once between them.
func TestRevocation(t *testing.T) {
	t.Parallel()
	c := newRevocationCluster(t)
	ns := newNamespace(t, "revoke")
	pub := "nats.io/allowed-pub-subjects"
	newServiceAccount(t, ns, "held", map[string]string{pub: "orders.new,orders.paid"})
	newServiceAccount(t, ns, "neighbour", nil)
	heldTok, neighbourTok := token(t, ns, "held"), token(t, ns, "neighbour")
	connectWhenKnown(t, c.servers[1].url(), heldTok).Close()
	connectWhenKnown(t, c.servers[1].url(), neighbourTok).Close()

	held := holdConn(t, c.servers[1], heldTok)
	neighbour := holdConn(t, c.servers[1], neighbourTok)
	sas := suite.kube.CoreV1().ServiceAccounts(ns)

	t.Run("an annotation it relies on is removed", func(t *testing.T) {
		sa, err := sas.Get(context.Background(), "held", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sa.Annotations[pub] = "orders.new"
		changed := time.Now()
		if _, err := sas.Update(context.Background(), sa, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		held.closedWithin(t, "annotation removed", changed, 5*time.Second)
		select {
		case <-held.reconnects:
		case <-time.After(10 * time.Second):
			t.Fatal("the client did not get back in with its token")
		}
		for _, subj := range []string{"orders.new", "orders.paid"} {
			if err := held.nc.Publish(subj, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := held.nc.FlushTimeout(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-held.errs:
			if !strings.Contains(err.Error(), `Publish to "orders.paid"`) {
				t.Errorf("violation %v, want one for orders.paid only", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("the reconnected client still holds the removed grant")
		}
		eventually(t, 5*time.Second, "one grant_narrowed revocation counted", func() error {
			if n := c.revoked(t, "grant_narrowed"); n != 1 {
				return fmt.Errorf("%v", n)
			}
			return nil
		})
	})

	t.Run("an annotation is added", func(t *testing.T) {
		sa, err := sas.Get(context.Background(), "held", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sa.Annotations[pub] = "orders.new,orders.shipped"
		if _, err := sas.Update(context.Background(), sa, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-held.disconnected:
			t.Error("a change that only adds closed the connection")
		case <-time.After(2 * time.Second):
		}
	})

	t.Run("its ServiceAccount is deleted", func(t *testing.T) {
		changed := time.Now()
		if err := sas.Delete(context.Background(), "held", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		held.closedWithin(t, "ServiceAccount deleted", changed, 5*time.Second)
		held.staysOut(t, "its ServiceAccount was deleted")
		if n := c.revoked(t, "serviceaccount_deleted"); n != 1 {
			t.Errorf("serviceaccount_deleted revocations over the sidecars = %v, want 1", n)
		}
	})

	t.Run("its bound pod is deleted", func(t *testing.T) {
		newServiceAccount(t, ns, "bound", nil)
		pod := newPod(t, ns, "bound-0", "bound")
		tok := podToken(t, pod)
		connectWhenKnown(t, c.servers[1].url(), tok).Close()
		h := holdConn(t, c.servers[1], tok)
		changed := time.Now()
		deletePod(t, ns, pod.Name)
		h.closedWithin(t, "bound pod deleted", changed, 5*time.Second)
		h.staysOut(t, "its pod was deleted")
		if n := c.revoked(t, "pod_deleted"); n != 1 {
			t.Errorf("pod_deleted revocations over the sidecars = %v, want 1", n)
		}
	})

	if !neighbour.nc.IsConnected() || len(neighbour.disconnected) > 0 {
		t.Error("the neighbour ServiceAccount's connection on the same server was closed")
	}
	var lines int
	for _, sc := range c.sidecars {
		lines += strings.Count(sc.p.log(), `"msg":"connection revoked"`)
	}
	if lines != 3 {
		t.Errorf("%d \"connection revoked\" log lines over the sidecars, want 3", lines)
	}
}

// Scenario: a namespace moved to another tenant account. Its connections are closed and log in
// again into the new account; a connection of another namespace stays.
func TestRevocationAccountMoved(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, deployOpts{
		revocation: true, accounts: []string{"TEAM_A", "TEAM_B"},
		serviceEnv: []string{"NATS_ALLOWED_ACCOUNTS=TEAM_A,TEAM_B"},
	})
	moving, staying := "revoke-moving", "revoke-staying"
	labelNamespace(t, moving, "TEAM_A")
	labelNamespace(t, staying, "TEAM_A")
	newServiceAccount(t, moving, "app", nil)
	newServiceAccount(t, staying, "app", nil)
	movingTok, stayingTok := token(t, moving, "app"), token(t, staying, "app")
	accountOf := func(nc *nats.Conn) string {
		conns, err := d.nats.connz()
		if err != nil {
			t.Fatal(err)
		}
		cid, err := nc.GetClientID()
		if err != nil {
			return ""
		}
		for _, c := range conns {
			if c.Cid == cid {
				return c.Account
			}
		}
		return ""
	}
	// Both labels must have reached the sidecar before the connections are held: a namespace
	// the sidecar sees labelled only later moves from APP to TEAM_A, which closes its
	// connections too.
	for _, tok := range []string{movingTok, stayingTok} {
		eventually(t, 15*time.Second, "a fresh login in TEAM_A", func() error {
			nc, err := dial(d.nats.url(), nats.Token(tok))
			if err != nil {
				return err
			}
			defer nc.Close()
			if got := accountOf(nc); got != "TEAM_A" {
				return fmt.Errorf("in %q", got)
			}
			return nil
		})
	}
	held, other := holdConn(t, d.nats, movingTok), holdConn(t, d.nats, stayingTok)
	account := func(h *heldConn) string { return accountOf(h.nc) }
	if got := account(held); got != "TEAM_A" {
		t.Fatalf("held connection in account %q, want TEAM_A", got)
	}

	changed := time.Now()
	labelNamespace(t, moving, "TEAM_B")
	held.closedWithin(t, "namespace moved to TEAM_B", changed, 5*time.Second)
	select {
	case <-held.reconnects:
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not get back in with its token")
	}
	eventually(t, 5*time.Second, "the reconnected client in TEAM_B", func() error {
		if got := account(held); got != "TEAM_B" {
			return fmt.Errorf("in %q", got)
		}
		return nil
	})
	if !other.nc.IsConnected() || len(other.disconnected) > 0 {
		t.Error("another namespace's connection was closed")
	}
	if n := d.svc.metrics(t).sum("nats_callout_revocations_total", "reason", "account_moved"); n != 1 {
		t.Errorf("account_moved revocations = %v, want 1", n)
	}
}
