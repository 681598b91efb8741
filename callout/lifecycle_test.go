package callout_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

func fixedCreds(t testing.TB, kp nkeys.KeyPair) func() *callout.Credentials {
	t.Helper()
	c, err := callout.ParseCredentials(testsupport.Seed(t, kp))
	if err != nil {
		t.Fatal(err)
	}
	return func() *callout.Credentials { return c }
}

func fixedRing(t testing.TB, kps ...nkeys.KeyPair) func() *callout.KeyRing {
	t.Helper()
	var seeds []string
	for _, kp := range kps {
		seeds = append(seeds, string(testsupport.Seed(t, kp)))
	}
	r, err := callout.ParseSigningKeys([]byte(strings.Join(seeds, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return func() *callout.KeyRing { return r }
}

func newUser(t testing.TB) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func newAccount(t testing.TB) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// runWatcher runs a reload.Watcher until the test ends.
func runWatcher(t testing.TB, w *reload.Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watcher: %v", err)
		}
	})
}

// credsFromSecret serves the service's credentials from a kubelet-style Secret volume and
// rotates the service when they change, as main wires it.
func credsFromSecret(t testing.TB, w *world, vol *secretVolume, rotate func()) func() *callout.Credentials {
	t.Helper()
	watcher, err := reload.NewWatcher(w.log, nil, reload.WithDebounce(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	f, err := reload.Add(watcher, "creds", vol.path(), callout.ParseCredentials, func(*callout.Credentials) { rotate() })
	if err != nil {
		t.Fatal(err)
	}
	runWatcher(t, watcher)
	return f.Current
}

// readiness samples a service's readiness and connected gauge until stopped and remembers
// every moment either said "down".
type readiness struct {
	stopCh chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	downs  []string
}

func watchReadiness(sc *sidecar) *readiness {
	r := &readiness{stopCh: make(chan struct{})}
	r.wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-r.stopCh:
				return
			case <-tick.C:
			}
			err := sc.svc.Ready()
			gauge := 1.0
			if i%10 == 0 {
				// Gathering the registry is costlier; sample the gauge less often.
				gauge = sc.metric("nats_callout_nats_connected")
			}
			if err != nil || gauge != 1 {
				r.mu.Lock()
				if len(r.downs) < 5 {
					r.downs = append(r.downs, fmt.Sprintf("%s: Ready() = %v, nats_callout_nats_connected = %v", time.Now().Format("15:04:05.000"), err, gauge))
				}
				r.mu.Unlock()
			}
		}
	})
	return r
}

func (r *readiness) stop() []string {
	close(r.stopCh)
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.downs
}

// TestCredentialRotationUnderLoad rotates the service's own nkey the way an operator does:
// the server is told to accept the new key too, the Secret is swapped by the kubelet, the
// service moves to a new connection, and the old key is removed from the server. Clients
// connect throughout and none may fail.
//
// nats-server cannot reload auth_callout, auth_users included, so the new key is in
// auth_users from the start; the reloads change the callout account's users.
func TestCredentialRotationUnderLoad(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	oldKey, newKey := k.service, newUser(t)
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, oldKey)},
		authUsers: []string{testsupport.PublicKey(t, oldKey), testsupport.PublicKey(t, newKey)}})
	vol := newSecretVolume(t, "nats.nk", string(testsupport.Seed(t, oldKey)))

	before := goroutines()
	var sc *sidecar
	creds := credsFromSecret(t, w, vol, func() { sc.svc.Rotate() })
	sc = w.startSidecar(sidecarConfig{url: srv.url(), creds: creds, keys: fixedRing(t, k.issuer)})
	sc.waitReady()
	token := w.token("shop", "api")

	l := startLoad(t, token, 4, srv.url())
	l.progress(10)
	ready := watchReadiness(sc)

	// 1. The server accepts both keys.
	l.reload(srv, func(c *natsConf) { c.serviceKeys = append(c.serviceKeys, testsupport.PublicKey(t, newKey)) })
	l.progress(10)

	// 2. The Secret rotates: the kubelet swaps ..data.
	swapped := vol.update(string(testsupport.Seed(t, newKey)))
	testsupport.WaitFor(t, "service on the new nkey", 10*time.Second, func() bool { return sc.svc.ActiveUser() == testsupport.PublicKey(t, newKey) })
	switchover := time.Since(swapped)
	testsupport.WaitFor(t, "server sees only the new nkey", 10*time.Second, func() bool {
		return slices.Equal(srv.serviceUsers(), []string{testsupport.PublicKey(t, newKey)})
	})
	l.progress(10)

	// 3. The old key is removed from the server.
	l.reload(srv, func(c *natsConf) { c.serviceKeys = []string{testsupport.PublicKey(t, newKey)} })
	l.progress(10)

	l.check("clients during rotation", srv)
	checkAllowedAll(t, w, sc)
	if downs := ready.stop(); len(downs) > 0 {
		t.Errorf("service reported not ready during the rotation:\n%s", strings.Join(downs, "\n"))
	}
	if got := srv.serviceUsers(); !slices.Equal(got, []string{testsupport.PublicKey(t, newKey)}) {
		t.Errorf("server sees service users %v, want only the new nkey %s", got, testsupport.PublicKey(t, newKey))
	}
	if got := sc.metric("nats_callout_nats_reconnects_total"); got != 0 {
		t.Errorf("nats_callout_nats_reconnects_total = %v after a rotation, want 0 (a rotation is not a reconnect)", got)
	}
	t.Logf("Secret swap to new connection in use: %s", switchover)

	if err := sc.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkNoLeaks(t, before)
}

// checkAllowedAll checks that the service allowed every request that carried a credential:
// the only refusals are of credential-less requests, which a reloading server sends when it
// re-authorizes clients it has not read a CONNECT from yet (and which a service connection
// the server does not know yet makes).
func checkAllowedAll(t *testing.T, w *world, sc *sidecar) {
	t.Helper()
	if got := sc.undecided(); len(got) > 0 {
		var lines []string
		for _, l := range strings.Split(w.logs.String(), "\n") {
			if strings.Contains(l, `"msg":"callout decision"`) && !strings.Contains(l, `"result":"allowed"`) && !strings.Contains(l, `"reason":"no_token"`) {
				lines = append(lines, l)
			}
		}
		t.Errorf("requests not allowed: %v, want none:\n%s", got, strings.Join(lines, "\n"))
	}
}

// TestRotationWaitsForServerToAcceptNewKey swaps in a credential the server does not accept
// yet, then another before the first is accepted: the old connection keeps serving until a
// new one is subscribed, and the abandoned credential never takes over.
func TestRotationWaitsForServerToAcceptNewKey(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	v1, v2, v3 := k.service, newUser(t), newUser(t)
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, v1)},
		authUsers: []string{testsupport.PublicKey(t, v1), testsupport.PublicKey(t, v2), testsupport.PublicKey(t, v3)}})
	vol := newSecretVolume(t, "nats.nk", string(testsupport.Seed(t, v1)))

	before := goroutines()
	var sc *sidecar
	creds := credsFromSecret(t, w, vol, func() { sc.svc.Rotate() })
	sc = w.startSidecar(sidecarConfig{url: srv.url(), creds: creds, keys: fixedRing(t, k.issuer), downReport: 20 * time.Millisecond})
	sc.waitReady()
	token := w.token("shop", "api")
	l := startLoad(t, token, 4, srv.url())
	l.progress(10)
	ready := watchReadiness(sc)

	// The Secret gets v2 before the server knows it.
	vol.update(string(testsupport.Seed(t, v2)))
	stuck := `"msg":"new NATS connection not up yet; the old one keeps serving","user":"` + testsupport.PublicKey(t, v2)
	testsupport.WaitFor(t, "the waiting v2 connection reported", 10*time.Second, func() bool { return strings.Contains(w.logs.String(), stuck) })
	l.progress(30)
	if n := strings.Count(w.logs.String(), stuck); n != 1 {
		t.Errorf("waiting connection reported %d times, want once a minute", n)
	}
	if got := sc.svc.ActiveUser(); got != testsupport.PublicKey(t, v1) {
		t.Errorf("active user %s while the server refuses v2, want v1 %s", got, testsupport.PublicKey(t, v1))
	}

	// v3 replaces v2 before v2 was ever accepted.
	vol.update(string(testsupport.Seed(t, v3)))
	testsupport.WaitFor(t, "service replacing the pending v2 connection", 10*time.Second, func() bool {
		return strings.Contains(w.logs.String(), `"abandoned_user":"`+testsupport.PublicKey(t, v2))
	})
	l.progress(10)

	// The server accepts v3; the service moves.
	l.reload(srv, func(c *natsConf) {
		c.serviceKeys = []string{testsupport.PublicKey(t, v1), testsupport.PublicKey(t, v3)}
	})
	testsupport.WaitFor(t, "server sees only v3", 10*time.Second, func() bool { return slices.Equal(srv.serviceUsers(), []string{testsupport.PublicKey(t, v3)}) })
	if got := sc.svc.ActiveUser(); got != testsupport.PublicKey(t, v3) {
		t.Errorf("active user %s, want v3 %s", got, testsupport.PublicKey(t, v3))
	}
	l.reload(srv, func(c *natsConf) { c.serviceKeys = []string{testsupport.PublicKey(t, v3)} })
	l.progress(10)
	l.check("clients during a delayed rotation", srv)
	checkAllowedAll(t, w, sc)
	if downs := ready.stop(); len(downs) > 0 {
		t.Errorf("service reported not ready while the old connection was serving:\n%s", strings.Join(downs, "\n"))
	}
	if err := sc.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The abandoned v2 connection, still retrying, must have been closed.
	checkNoLeaks(t, before)
}

// TestIssuerRotationUnderLoad rotates the issuer account as an operator does across a NATS
// cluster: every pod's sidecar reads the same Secret; the new seed is added, pods are rolled
// to the new auth_callout.issuer one by one (here: a server still on the old issuer and one
// already on the new), and the old seed is removed at the end. Clients of both servers connect
// throughout. Removing the old seed while a server still expects it is the misconfiguration
// the service must make loud.
func TestIssuerRotationUnderLoad(t *testing.T) {
	w := newWorld(t)
	svcKey := newUser(t)
	oldIss, newIss := newAccount(t), newAccount(t)
	vol := newSecretVolume(t, "issuers.nk", string(testsupport.Seed(t, oldIss)))
	// One watcher per pod, all over the same Secret content.
	signingKeys := func() func() *callout.KeyRing {
		watcher, err := reload.NewWatcher(w.log, nil, reload.WithDebounce(10*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		f, err := reload.Add(watcher, "signing_key", vol.path(), callout.ParseSigningKeys, nil)
		if err != nil {
			t.Fatal(err)
		}
		runWatcher(t, watcher)
		return f.Current
	}
	holds := func(keys func() *callout.KeyRing, kp nkeys.KeyPair) bool {
		_, ok := keys().Key(testsupport.PublicKey(t, kp))
		return ok
	}

	s1 := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, oldIss), serviceKeys: []string{testsupport.PublicKey(t, svcKey)}})
	keys1 := signingKeys()
	p1 := w.startSidecar(sidecarConfig{url: s1.url(), creds: fixedCreds(t, svcKey), keys: keys1})
	p1.waitReady()
	token := w.token("shop", "api")
	l1 := startLoad(t, token, 3, s1.url())
	l1.progress(10)

	// 1. The Secret gains the new issuer's seed.
	vol.update(string(testsupport.Seed(t, oldIss)) + "\n" + string(testsupport.Seed(t, newIss)) + "\n")
	testsupport.WaitFor(t, "pod 1 holding both issuers", 10*time.Second, func() bool { return holds(keys1, oldIss) && holds(keys1, newIss) })
	l1.progress(10)

	// 2. A pod rolled to the new issuer comes up with its sidecar.
	s2 := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, newIss), serviceKeys: []string{testsupport.PublicKey(t, svcKey)}})
	keys2 := signingKeys()
	p2 := w.startSidecar(sidecarConfig{url: s2.url(), creds: fixedCreds(t, svcKey), keys: keys2})
	p2.waitReady()
	l2 := startLoad(t, token, 3, s2.url())
	l1.progress(10)
	l2.progress(10)
	l1.check("clients of the server on the old issuer")

	// 3. The old seed is removed while server 1 still expects it.
	vol.update(string(testsupport.Seed(t, newIss)))
	testsupport.WaitFor(t, "both pods holding only the new issuer", 10*time.Second, func() bool {
		return !holds(keys1, oldIss) && !holds(keys2, oldIss) && holds(keys1, newIss) && holds(keys2, newIss)
	})
	l2.progress(10)

	const failing = 3
	errs := make(chan error, failing)
	for range failing {
		go func() {
			nc, err := nats.Connect(s1.url(), nats.Token(token), nats.MaxReconnects(0), nats.Timeout(5*time.Second))
			if err == nil {
				nc.Close()
			}
			errs <- err
		}()
	}
	for range failing {
		if err := <-errs; err == nil {
			t.Error("client of a server expecting a removed issuer connected, want refused")
		}
	}
	l2.progress(10)
	l2.check("clients of the server on the new issuer")

	if want, bad := p1.handler.UnknownIssuer(time.Minute); !bad || want != testsupport.PublicKey(t, oldIss) {
		t.Errorf("UnknownIssuer = %q, %v; want %s, true", want, bad, testsupport.PublicKey(t, oldIss))
	}
	if _, bad := p2.handler.UnknownIssuer(time.Minute); bad {
		t.Error("pod 2 reports an unknown issuer, want none")
	}
	if got := p1.metric("nats_callout_requests_total", "result", "dropped", "reason", "unknown_issuer"); got != failing {
		t.Errorf(`requests_total{dropped,unknown_issuer} = %v, want %d`, got, failing)
	}
	logs := w.logs.String()
	if n := strings.Count(logs, "expects responses signed by an issuer account key the service does not hold"); n != 1 {
		t.Errorf("unknown-issuer error logged %d times for %d requests, want once (rate limited)", n, failing)
	}
	if !strings.Contains(logs, `"expected_issuer":"`+testsupport.PublicKey(t, oldIss)+`","held_issuers":["`+testsupport.PublicKey(t, newIss)+`"]`) {
		t.Errorf("unknown-issuer log does not name both keys; log:\n%s", grepLines(logs, "does not hold"))
	}
}

// TestNATSRestart stops the server under a running service and starts it again on the same
// port: the service reports itself down, then reconnects and answers again by itself.
func TestNATSRestart(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, k.service)}})
	sc := w.startSidecar(sidecarConfig{url: srv.url(), creds: fixedCreds(t, k.service), keys: fixedRing(t, k.issuer)})
	sc.waitReady()
	token := w.token("shop", "api")
	mustConnect(t, srv.url(), token)
	if got := sc.metric("nats_callout_nats_connected"); got != 1 {
		t.Errorf("nats_callout_nats_connected = %v while connected, want 1", got)
	}

	srv.stop()
	testsupport.WaitFor(t, "service not ready", 10*time.Second, func() bool { return sc.svc.Ready() != nil })
	if err := sc.svc.Ready(); !strings.Contains(err.Error(), "not connected to "+srv.url()) {
		t.Errorf("Ready() = %v, want it to say the service is not connected to %s", err, srv.url())
	}
	if got := sc.metric("nats_callout_nats_connected"); got != 0 {
		t.Errorf("nats_callout_nats_connected = %v while the server is down, want 0", got)
	}
	testsupport.WaitFor(t, "disconnect counted", 10*time.Second, func() bool { return sc.metric("nats_callout_nats_disconnects_total") == 1 })

	restarted := time.Now()
	srv.start()
	sc.waitReady()
	t.Logf("service ready %s after the server was (ReconnectWait 50ms)", time.Since(restarted))
	if got := sc.metric("nats_callout_nats_connected"); got != 1 {
		t.Errorf("nats_callout_nats_connected = %v after the restart, want 1", got)
	}
	if got := sc.metric("nats_callout_nats_reconnects_total"); got != 1 {
		t.Errorf("nats_callout_nats_reconnects_total = %v, want 1", got)
	}
	mustConnect(t, srv.url(), token)
	logs := w.logs.String()
	for _, msg := range []string{"disconnected from nats-server; reconnecting", "reconnected to nats-server"} {
		if !strings.Contains(logs, msg) {
			t.Errorf("no %q in the log", msg)
		}
	}
}

// TestServiceStartsBeforeServer starts the sidecar first, as often happens in a pod.
func TestServiceStartsBeforeServer(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	port := freePort(t)
	conf := natsConf{port: port, issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, k.service)}}
	sc := w.startSidecar(sidecarConfig{url: conf.url(), creds: fixedCreds(t, k.service), keys: fixedRing(t, k.issuer)})

	testsupport.WaitFor(t, "a failed connection attempt logged", 10*time.Second, func() bool {
		return strings.Contains(w.logs.String(), "cannot reach nats-server; retrying")
	})
	if err := sc.svc.Ready(); err == nil {
		t.Fatal("Ready() = nil with no server, want an error")
	}
	if got := sc.metric("nats_callout_nats_connected"); got != 0 {
		t.Errorf("nats_callout_nats_connected = %v with no server, want 0", got)
	}

	started := time.Now()
	srv := startNATS(t, conf)
	sc.waitReady()
	t.Logf("service ready %s after the server was (ReconnectWait 50ms)", time.Since(started))
	mustConnect(t, srv.url(), w.token("shop", "api"))
	if got := sc.metric("nats_callout_nats_connected"); got != 1 {
		t.Errorf("nats_callout_nats_connected = %v, want 1", got)
	}
}

func (c natsConf) url() string { return (&natsServer{conf: c}).url() }

// TestShutdownAnswersRequestsInFlight cancels the service while requests are in its workers
// and its queue: every one of them is answered, Run returns nil and nothing is left running.
func TestShutdownAnswersRequestsInFlight(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	// Generous timeouts: queued requests must not expire while the test sets the scene.
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, k.service)}, authTimeout: 10})
	token := w.token("shop", "api")
	gate := newGatedVerifier(w.verifier)

	before := goroutines()
	const workers, clients = 4, 12
	sc := w.startSidecar(sidecarConfig{url: srv.url(), creds: fixedCreds(t, k.service), keys: fixedRing(t, k.issuer),
		verifier: gate, workers: workers, requestTimeout: 8 * time.Second})
	sc.waitReady()
	conn := sc.svc.ActiveConn()

	results := make(chan error, clients)
	for range clients {
		go func() {
			nc, err := nats.Connect(srv.url(), nats.Token(token), nats.MaxReconnects(0), nats.Timeout(15*time.Second))
			if err == nil {
				nc.Close()
			}
			results <- err
		}()
	}
	testsupport.WaitFor(t, "every worker busy", 10*time.Second, func() bool { return gate.entered.Load() == workers })
	testsupport.WaitFor(t, "every request received", 10*time.Second, func() bool { return conn.Stats().InMsgs == clients })

	sc.cancel()
	testsupport.WaitFor(t, "service reporting shutdown", 10*time.Second, func() bool {
		err := sc.svc.Ready()
		return err != nil && strings.Contains(err.Error(), "shutting down")
	})
	gate.open()
	for range clients {
		if err := <-results; err != nil {
			t.Errorf("client whose request was in flight at shutdown: %v, want connected", err)
		}
	}
	if err := sc.stop(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if got := sc.metric("nats_callout_requests_total", "result", "allowed", "reason", "ok"); got != clients {
		t.Errorf("requests_total{allowed,ok} = %v, want %d", got, clients)
	}
	checkNoLeaks(t, before)
}

// TestClosedConnectionIsReplaced covers the zombie: a connection nats.go has closed must not
// leave the service "ready" on it.
func TestClosedConnectionIsReplaced(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, k.service)}})
	token := w.token("shop", "api")
	sc := w.startSidecar(sidecarConfig{url: srv.url(), creds: fixedCreds(t, k.service), keys: fixedRing(t, k.issuer),
		downReport: 50 * time.Millisecond})
	sc.waitReady()

	t.Run("closed by nats.go", func(t *testing.T) {
		dead := sc.svc.ActiveConn()
		dead.Close()
		if sc.svc.ActiveConn() == dead && sc.svc.Ready() == nil {
			t.Error("Ready() = nil on a closed connection")
		}
		testsupport.WaitFor(t, "a new connection", 10*time.Second, func() bool { return sc.svc.ActiveConn() != dead && sc.svc.Ready() == nil })
		if got := sc.metric("nats_callout_nats_reconnects_total"); got != 1 {
			t.Errorf("nats_callout_nats_reconnects_total = %v, want 1", got)
		}
		if got := sc.metric("nats_callout_nats_connected"); got != 1 {
			t.Errorf("nats_callout_nats_connected = %v, want 1", got)
		}
		mustConnect(t, srv.url(), token)
		if !strings.Contains(w.logs.String(), "NATS connection closed; opening a new one") {
			t.Error("replacement not logged")
		}
	})

	t.Run("server stops accepting the service", func(t *testing.T) {
		// The server drops the service's connection on reload; its reconnects then go to the
		// callout itself (the key is no longer a user), which nobody answers, and time out.
		srv.reload(func(c *natsConf) { c.serviceKeys = []string{testsupport.PublicKey(t, newUser(t))} })
		testsupport.WaitFor(t, "service not ready", 10*time.Second, func() bool { return sc.svc.Ready() != nil })
		if err := sc.svc.Ready(); !strings.Contains(err.Error(), "not connected to "+srv.url()) {
			t.Errorf("Ready() = %v, want it to say the service is not connected", err)
		}
		if got := sc.metric("nats_callout_nats_connected"); got != 0 {
			t.Errorf("nats_callout_nats_connected = %v while refused, want 0", got)
		}
		report := "NATS connection still down; retrying"
		testsupport.WaitFor(t, "the outage reported", 10*time.Second, func() bool { return strings.Contains(w.logs.String(), report) })
		attempts := sc.svc.ActiveConn().Stats().Reconnects
		testsupport.WaitFor(t, "two more connection attempts", 10*time.Second, func() bool { return sc.svc.ActiveConn().Stats().Reconnects >= attempts+2 })
		if n := strings.Count(w.logs.String(), report); n != 1 {
			t.Errorf("outage reported %d times, want once a minute:\n%s", n, grepLines(w.logs.String(), report))
		}

		srv.reload(func(c *natsConf) { c.serviceKeys = []string{testsupport.PublicKey(t, k.service)} })
		sc.waitReady()
		mustConnect(t, srv.url(), token)
	})
}

// TestOverloadDropsAtOnce fills the request queue: what does not fit is dropped on arrival and
// counted, and what was queued is still answered.
func TestOverloadDropsAtOnce(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, k.service)}})
	token := w.token("shop", "api")
	gate := newGatedVerifier(w.verifier)
	sc := w.startSidecar(sidecarConfig{url: srv.url(), creds: fixedCreds(t, k.service), keys: fixedRing(t, k.issuer),
		verifier: gate, workers: 1, queue: 2})
	sc.waitReady()

	results := make(chan error, 6)
	connect := func() {
		nc, err := nats.Connect(srv.url(), nats.Token(token), nats.MaxReconnects(0), nats.Timeout(5*time.Second))
		if err == nil {
			nc.Close()
		}
		results <- err
	}
	go connect()
	testsupport.WaitFor(t, "the worker busy", 10*time.Second, func() bool { return gate.entered.Load() == 1 })
	for range 5 {
		go connect()
	}
	// One in the worker, two queued, three dropped.
	testsupport.WaitFor(t, "three requests dropped", 10*time.Second, func() bool {
		return sc.metric("nats_callout_requests_total", "result", "dropped", "reason", callout.ReasonOverloaded) == 3
	})
	gate.open()
	var ok, failed int
	for range 6 {
		if err := <-results; err != nil {
			failed++
		} else {
			ok++
		}
	}
	if ok != 3 || failed != 3 {
		t.Errorf("%d clients connected and %d failed, want 3 and 3", ok, failed)
	}
	if n := strings.Count(w.logs.String(), "callout request queue full"); n != 1 {
		t.Errorf("queue-full warning logged %d times, want once", n)
	}
}

func mustConnect(t testing.TB, url, token string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Token(token), nats.MaxReconnects(0), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	nc.Close()
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestNoSecretsInLogs runs the service through traffic with real tokens, refusals, a
// credential rotation and a server restart, and then looks for every secret involved in
// everything it logged and reported.
func TestNoSecretsInLogs(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, true)
	oldKey, newKey := k.service, newUser(t)
	spareIssuer := newAccount(t)

	// Pod A: nkey login from a Secret that rotates, two issuers, encrypted callouts.
	a := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, oldKey), testsupport.PublicKey(t, newKey)},
		authUsers: []string{testsupport.PublicKey(t, oldKey), testsupport.PublicKey(t, newKey)}, xkey: testsupport.PublicKey(t, k.xkey)})
	vol := newSecretVolume(t, "nats.nk", string(testsupport.Seed(t, oldKey)))
	xk, err := callout.ParseXKey(testsupport.Seed(t, k.xkey))
	if err != nil {
		t.Fatal(err)
	}
	var pa *sidecar
	creds := credsFromSecret(t, w, vol, func() { pa.svc.Rotate() })
	ring := fixedRing(t, k.issuer, spareIssuer)
	pa = w.startSidecar(sidecarConfig{url: a.url(), creds: creds, keys: ring, xkey: func() *callout.XKey { return xk }})
	pa.waitReady()

	// Pod B: the service logs in with a password in NATS_URL.
	const servicePass = "s3rvice-pa55word-in-url"
	b := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), servicePass: servicePass, authUsers: []string{"callout"}})
	bURL := strings.Replace(b.url(), "nats://", "nats://callout:"+servicePass+"@", 1)
	pb := w.startSidecar(sidecarConfig{url: bURL, keys: ring})
	pb.waitReady()

	good := w.token("shop", "api")
	ghost, err := w.issuer.ServiceAccountToken("shop", "ghost", "uid-ghost", []string{audience}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expiredClaims := w.issuer.Claims("shop", "api", "uid-x", []string{audience}, time.Hour)
	expiredClaims.ExpiresAt.Time = time.Now().Add(-time.Minute)
	expired, err := w.issuer.Sign(expiredClaims)
	if err != nil {
		t.Fatal(err)
	}
	const bogusPass = "hunter2-is-not-a-token"
	for _, url := range []string{a.url(), b.url()} {
		mustConnect(t, url, good)
		// The token as a password, for clients that only speak user/password.
		nc, err := nats.Connect(url, nats.UserInfo("shop-api", good), nats.MaxReconnects(0))
		if err != nil {
			t.Fatalf("token as password: %v", err)
		}
		nc.Close()
		for _, bad := range []nats.Option{nats.Token(ghost), nats.Token(expired), nats.UserInfo("someone", bogusPass)} {
			if nc, err := nats.Connect(url, bad, nats.MaxReconnects(0)); err == nil {
				nc.Close()
				t.Error("a bad credential connected, want refused")
			}
		}
	}

	// Rotation, then an outage and recovery of pod B's server.
	vol.update(string(testsupport.Seed(t, newKey)))
	testsupport.WaitFor(t, "pod A on the new nkey", 10*time.Second, func() bool { return pa.svc.ActiveUser() == testsupport.PublicKey(t, newKey) })
	b.stop()
	testsupport.WaitFor(t, "pod B not ready", 10*time.Second, func() bool { return pb.svc.Ready() != nil })
	reports := []string{pb.svc.Ready().Error()}
	b.start()
	pb.waitReady()
	mustConnect(t, b.url(), good)

	// Secret-bearing values logged on purpose must redact themselves.
	w.log.Info("values", "creds", creds(), "signing_keys", ring(), "xkey", xk, "url", callout.RedactURL(bURL))
	reports = append(reports, callout.RedactURL(bURL))
	if err := pa.stop(); err != nil {
		t.Fatal(err)
	}
	if err := pb.stop(); err != nil {
		t.Fatal(err)
	}

	logs := w.logs.String()
	for _, want := range []string{"callout decision", `"result":"denied"`, "disconnected from nats-server", "reconnected to nats-server",
		"new NATS connection subscribed", "reload: file reloaded"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log has no %q: the test did not exercise what it checks", want)
		}
	}
	secrets := map[string]string{
		"service password in NATS_URL": servicePass,
		"client password":              bogusPass,
		"admin password":               adminPass,
	}
	for name, tok := range map[string]string{"token": good, "token of a missing ServiceAccount": ghost, "expired token": expired} {
		secrets[name] = tok
		secrets[name+" (signature)"] = tok[strings.LastIndex(tok, ".")+1:]
	}
	for name, kp := range map[string]nkeys.KeyPair{"old service seed": oldKey, "new service seed": newKey,
		"issuer seed": k.issuer, "spare issuer seed": spareIssuer, "xkey seed": k.xkey} {
		s := string(testsupport.Seed(t, kp))
		secrets[name] = s
		// A seed's first characters are its type prefix; any longer run of it is a leak.
		secrets[name+" (tail)"] = s[len(s)-20:]
	}
	reportText := strings.Join(reports, "\n")
	for name, secret := range secrets {
		if strings.Contains(logs, secret) {
			t.Errorf("%s appears in the log:\n%s", name, grepLines(logs, secret))
		}
		if strings.Contains(reportText, secret) {
			t.Errorf("%s appears in a readiness report: %s", name, reportText)
		}
	}
}
