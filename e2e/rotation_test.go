//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// waitReload waits until the service has loaded a new version of a Secret file (the file label
// of nats_callout_reloads_total: creds, signing_key, xkey).
func waitReload(t *testing.T, s *calloutService, file string, before float64) {
	t.Helper()
	eventually(t, 20*time.Second, file+" reloaded", func() error {
		m := s.metrics(t)
		if got := m.sum("nats_callout_reloads_total", "file", file, "result", "success"); got <= before {
			return fmt.Errorf("successful reloads of %s: %g", file, got)
		}
		if got := m.sum("nats_callout_last_reload_successful", "file", file); got != 1 {
			return fmt.Errorf("last reload of %s not successful", file)
		}
		return nil
	})
}

func reloads(t *testing.T, s *calloutService, file string) float64 {
	t.Helper()
	return s.metrics(t).sum("nats_callout_reloads_total", "file", file, "result", "success")
}

// Scenario 7: Secret rotation while workloads keep connecting. Every connection attempt must
// succeed, except while nats-server itself restarts (until its sidecar is back).
func TestSecretRotation(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, "rotation")
	newServiceAccount(t, ns, "busy", nil)

	t.Run("service credential", func(t *testing.T) {
		t.Parallel()
		// The README's procedure. nats-server cannot reload anything under auth_callout,
		// auth_users included ("config reload not supported for AuthCallout"), so the next
		// nkey is listed in auth_users ahead of time and takes effect with a restart; the
		// rotation itself then takes two config reloads and a Secret update.
		d := newDeployment(t, deployOpts{})
		url := d.nats.url()
		old, next := d.keys.service, newUserKey(t)
		oldPub, nextPub := pubOf(t, old), pubOf(t, next)
		conf := d.conf
		conf.authUsers = []string{oldPub, nextPub}
		d.restartNATS(t, conf)

		tok := token(t, ns, "busy")
		connectWhenKnown(t, url, tok).Close()
		load := startLoad(t, url, tok, "rotation.load", 2)
		load.waitSuccesses(t, 10)
		// A long-lived workload that reconnects, as nats.go does by default.
		disconnects := make(chan error, 64)
		workload := connect(t, url, tok, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { disconnects <- err }))

		// 1. AUTH's users gain the next nkey: a config reload.
		conf.serviceUsers = []string{oldPub, nextPub}
		w1 := d.reloadNATS(t, conf)
		nc, err := dial(url, nats.Nkey(nextPub, next.Sign))
		if err != nil {
			t.Fatalf("the next nkey after the reload: %v", err)
		}
		nc.Close()
		load.waitSuccesses(t, 10)

		// 2. The Secret's service.nk is replaced (..data swap): the service opens a connection
		// with the new nkey, subscribes, and only then drains the old one. Nothing may fail.
		before := reloads(t, d.svc, "creds")
		swap := struct{ from, to time.Time }{from: time.Now()}
		d.vol.update(t, map[string][]byte{keyService: seedFile(t, next), keyIssuer: seedFile(t, d.keys.issuer)})
		waitReload(t, d.svc, "creds", before)
		eventually(t, 20*time.Second, "the service connected with the new nkey only", func() error {
			conns, err := d.nats.connz()
			if err != nil {
				return err
			}
			var users []string
			for _, c := range conns {
				if c.Account == "AUTH" {
					users = append(users, c.AuthorizedUser)
				}
			}
			if len(users) != 1 || users[0] != nextPub {
				return fmt.Errorf("callout account connections by %v, want only %s (old %s)", users, nextPub, oldPub)
			}
			return nil
		})
		swap.to = time.Now()
		t.Logf("Secret swapped to the service serving on the new nkey only: %s", swap.to.Sub(swap.from).Round(time.Millisecond))
		load.waitSuccesses(t, 20)

		// 3. The old nkey leaves AUTH's users: another reload. auth_users keeps it until the
		// next restart; it bypasses the callout but matches no user any more, so it is refused.
		conf.serviceUsers = []string{nextPub}
		w2 := d.reloadNATS(t, conf)
		if nc, err := dial(url, nats.Nkey(oldPub, old.Sign)); err == nil {
			nc.Close()
			t.Error("the old service nkey still logs in")
		}
		load.waitSuccesses(t, 20)
		load.finish(t, w1, w2)

		// The workload is back after the reloads dropped it, and works.
		eventually(t, 10*time.Second, "the long-lived workload reconnected", func() error {
			if !workload.IsConnected() {
				return errors.New(workload.Status().String())
			}
			return flushErr(workload)
		})
		t.Logf("the long-lived workload was disconnected %d times by 2 config reloads and reconnected", len(disconnects))
	})

	t.Run("issuer", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, deployOpts{})
		url := d.nats.url()
		tok := token(t, ns, "busy")
		connectWhenKnown(t, url, tok).Close()
		load := startLoad(t, url, tok, "rotation.load", 2)
		load.waitSuccesses(t, 10)

		old, next := d.keys.issuer, newAccountKey(t)

		// 1. The new seed is added to issuer.nk, after the old one (..data swap).
		before := reloads(t, d.svc, "signing_key")
		d.vol.update(t, map[string][]byte{keyService: seedFile(t, d.keys.service), keyIssuer: seedFile(t, old, next)})
		waitReload(t, d.svc, "signing_key", before)
		load.waitSuccesses(t, 20)

		// 2. nats-server restarts with the new issuer (auth_callout cannot be reloaded).
		conf := d.conf
		conf.issuer = pubOf(t, next)
		w := d.restartNATS(t, conf)
		load.waitSuccesses(t, 20)

		// 3. The old seed is removed.
		before = reloads(t, d.svc, "signing_key")
		d.vol.update(t, map[string][]byte{keyService: seedFile(t, d.keys.service), keyIssuer: seedFile(t, next)})
		waitReload(t, d.svc, "signing_key", before)
		load.waitSuccesses(t, 20)
		load.finish(t, w)

		if _, body, err := d.svc.get("/readyz"); err != nil || strings.Contains(body, "[!]") {
			t.Errorf("/readyz after the rotation: %v\n%s", err, body)
		}
	})

	t.Run("issuer removed too early", func(t *testing.T) {
		t.Parallel()
		// The wrong order: the Secret loses the issuer nats-server still expects. The service
		// cannot sign for it, drops the requests and says so on /readyz, without going unready
		// (that would take the whole NATS pod out of service).
		d := newDeployment(t, deployOpts{})
		url := d.nats.url()
		tok := token(t, ns, "busy")
		connectWhenKnown(t, url, tok).Close()
		before := reloads(t, d.svc, "signing_key")
		d.vol.update(t, map[string][]byte{keyService: seedFile(t, d.keys.service), keyIssuer: seedFile(t, newAccountKey(t))})
		waitReload(t, d.svc, "signing_key", before)
		dropped := d.svc.requests(t, "result", "dropped", "reason", "unknown_issuer")
		// Unanswered, the client fails when the server's authorization timeout ends (nats.go
		// words that as an authorization violation or a broken-off handshake).
		if nc, err := dial(url, nats.Token(tok)); err == nil {
			nc.Close()
			t.Fatal("allowed although the service holds no key for the server's issuer")
		}
		if got := d.svc.requests(t, "result", "dropped", "reason", "unknown_issuer"); got != dropped+1 {
			t.Errorf("dropped unknown_issuer went from %g to %g", dropped, got)
		}
		code, body, err := d.svc.get("/readyz")
		if err != nil || code != 200 || !strings.Contains(body, d.conf.issuer) {
			t.Errorf("/readyz %d %v, want 200 naming the missing issuer %s:\n%s", code, err, d.conf.issuer, body)
		}
	})
}
