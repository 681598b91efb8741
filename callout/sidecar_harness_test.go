package callout_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// This file is the harness for lifecycle tests: nats-servers that are reconfigured, reloaded,
// stopped and started again; sidecars (one callout service each, as in a NATS pod) that share
// one Kubernetes API and token issuer; kubelet-style Secret volumes; and a load of clients
// connecting continuously.

// natsConf is a server-config-mode nats-server configuration as a user writes it, reduced to
// what lifecycle tests change.
type natsConf struct {
	// port is fixed once the server has started, so that reloads and restarts keep it.
	port int
	// issuer is auth_callout.issuer (A...).
	issuer string
	// serviceKeys are the nkeys (U...) the callout service may log in with: the users of the
	// callout account, which a config reload can change.
	serviceKeys []string
	// authUsers are the nkeys that bypass the callout (auth_callout.auth_users); nil means
	// serviceKeys. nats-server cannot reload any auth_callout setting, so a key the service
	// will rotate to without a server restart must be listed here from the start.
	authUsers []string
	// servicePass, if set, also lets the service log in as user "callout" with this password.
	servicePass string
	// xkey is auth_callout.xkey (X...), if callouts are encrypted.
	xkey string
	// authTimeout is authorization.timeout in seconds, how long a client waits for the
	// callout; 0 means nats-server's default of 2.
	authTimeout int
}

func (c natsConf) render() string {
	var users, authUsers []string
	for _, k := range c.serviceKeys {
		users = append(users, fmt.Sprintf("{ nkey: %q }", k))
	}
	if c.authUsers == nil {
		c.authUsers = c.serviceKeys
	}
	for _, k := range c.authUsers {
		authUsers = append(authUsers, fmt.Sprintf("%q", k))
	}
	if c.servicePass != "" {
		users = append(users, fmt.Sprintf("{ user: callout, password: %q }", c.servicePass))
		authUsers = append(authUsers, `"callout"`)
	}
	authUsers = append(authUsers, fmt.Sprintf("%q", adminUser))
	xkey := ""
	if c.xkey != "" {
		xkey = fmt.Sprintf("xkey: %q", c.xkey)
	}
	if c.authTimeout == 0 {
		c.authTimeout = 2
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
  timeout: %d
  auth_callout {
    issuer: %q
    auth_users: [ %s ]
    account: AUTH
    %s
  }
}
`, c.port, strings.Join(users, ", "), adminUser, adminPass, c.authTimeout, c.issuer, strings.Join(authUsers, ", "), xkey)
}

// natsServer is an embedded nats-server run from a config file that a test rewrites and
// reloads, or stops and starts again on the same port.
type natsServer struct {
	t    testing.TB
	path string
	conf natsConf

	mu      sync.Mutex
	srv     *server.Server
	reloads []interval
}

// interval is a span of time during which something happened.
type interval struct{ start, end time.Time }

func (i interval) overlaps(o interval) bool { return !i.end.Before(o.start) && !o.end.Before(i.start) }

func startNATS(t testing.TB, conf natsConf) *natsServer {
	t.Helper()
	if conf.port == 0 {
		conf.port = -1
	}
	if conf.authUsers == nil {
		conf.authUsers = conf.serviceKeys
	}
	n := &natsServer{t: t, path: filepath.Join(t.TempDir(), "nats.conf"), conf: conf}
	n.start()
	t.Cleanup(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.srv != nil {
			n.srv.Shutdown()
		}
	})
	return n
}

// start runs the server from the current config.
func (n *natsServer) start() {
	t := n.t
	t.Helper()
	n.write()
	opts, err := server.ProcessConfigFile(n.path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, n.conf.render())
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	if n.conf.port < 0 {
		n.conf.port = s.Addr().(*net.TCPAddr).Port
		n.write()
	}
	n.mu.Lock()
	n.srv = s
	n.mu.Unlock()
}

func (n *natsServer) write() {
	if err := os.WriteFile(n.path, []byte(n.conf.render()), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

func (n *natsServer) server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.conf.port) }

// reload rewrites the config file with change applied and has the running server reload it.
func (n *natsServer) reload(change func(*natsConf)) {
	n.t.Helper()
	change(&n.conf)
	n.write()
	start := time.Now()
	if err := n.server().Reload(); err != nil {
		n.t.Fatalf("reload: %v\n%s", err, n.conf.render())
	}
	n.mu.Lock()
	n.reloads = append(n.reloads, interval{start, time.Now()})
	n.mu.Unlock()
}

// duringReload reports whether span overlaps a config reload of the server.
//
// A reload re-authorizes every client, including clients still in their handshake: those
// whose CONNECT the server has not read yet go to the callout with no credentials at all, are
// denied and fail with "Authorization Violation"; others are closed without a word (the client
// sees EOF). That is nats-server's doing, not the service's; tests check separately that the
// service allowed every request that carried a credential.
func (n *natsServer) duringReload(span interval) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range n.reloads {
		if r.overlaps(span) {
			return true
		}
	}
	return false
}

// stop shuts the server down and waits until it has.
func (n *natsServer) stop() {
	n.mu.Lock()
	s := n.srv
	n.srv = nil
	n.mu.Unlock()
	s.Shutdown()
	s.WaitForShutdown()
}

// serviceUsers lists the users of the open connections in the callout account, as the server
// sees them.
func (n *natsServer) serviceUsers() []string {
	n.t.Helper()
	cz, err := n.server().Connz(&server.ConnzOptions{Username: true, Account: "AUTH"})
	if err != nil {
		n.t.Fatal(err)
	}
	var users []string
	for _, c := range cz.Conns {
		users = append(users, c.AuthorizedUser)
	}
	slices.Sort(users)
	return users
}

// freePort returns a port nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// world is the Kubernetes side that every sidecar of a test shares: one API (a MemoryCluster
// feeding a real informer) and one token issuer with its JWKS.
type world struct {
	t        testing.TB
	issuer   *kubefake.TokenIssuer
	kube     *kubefake.MemoryCluster
	store    *kube.Store
	verifier *kube.Verifier
	logs     *testsupport.LogBuffer
	log      *slog.Logger
}

// rsaIssuer is shared by the lifecycle tests: generating an RSA key takes seconds under -race.
var rsaIssuer = sync.OnceValues(func() (*kubefake.TokenIssuer, error) { return kubefake.NewTokenIssuer(testIssuer) })

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{t: t, kube: newMemoryCluster(t), logs: &testsupport.LogBuffer{}}
	w.log = slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	if w.issuer, err = rsaIssuer(); err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(w.issuer.JWKSHandler())
	t.Cleanup(jwks.Close)
	ctx, cancel := context.WithCancel(context.Background())
	w.verifier, err = kube.NewVerifier(ctx, kube.VerifierConfig{
		JWKSURL: jwks.URL, Issuer: testIssuer, Audience: audience, Logger: w.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.store, err = kube.NewStore(w.kube.Client(), kube.StoreConfig{Logger: w.log}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.store.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		<-w.verifier.Done()
	})
	testsupport.WaitFor(t, "informer synced and JWKS loaded", 10*time.Second, func() bool { return w.store.HasSynced() && w.verifier.KeyCount() > 0 })
	return w
}

// token creates a ServiceAccount and returns a token for it once the informer has it.
func (w *world) token(ns, name string) string {
	w.t.Helper()
	sa := &kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: types.UID(fmt.Sprintf("uid-%s-%s-%d", ns, name, time.Now().UnixNano())),
	}}
	created, err := w.kube.Create(context.Background(), sa)
	if err != nil {
		w.t.Fatal(err)
	}
	tok, err := w.issuer.ServiceAccountToken(ns, name, string(created.UID), []string{audience}, time.Hour)
	if err != nil {
		w.t.Fatal(err)
	}
	testsupport.WaitFor(w.t, "ServiceAccount in cache", 10*time.Second, func() bool {
		_, err := w.store.Policy(kube.Identity{Namespace: ns, Name: name, UID: string(created.UID), Expiry: time.Now().Add(time.Hour)})
		return err == nil
	})
	return tok
}

// sidecarConfig is what differs between the sidecars of lifecycle tests.
type sidecarConfig struct {
	url   string
	creds func() *callout.Credentials
	keys  func() *callout.KeyRing
	xkey  func() *callout.XKey
	// verifier defaults to the world's.
	verifier       callout.TokenVerifier
	workers, queue int
	// requestTimeout must stay below the server's authTimeout.
	requestTimeout time.Duration
	// downReport, if set, shortens how long a connection is down before it is reported.
	downReport time.Duration
}

// sidecar is one callout service with its own metrics registry, as in one NATS pod.
type sidecar struct {
	t       testing.TB
	svc     *callout.Service
	handler *callout.Handler
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error

	once    sync.Once
	stopErr error
}

func (w *world) startSidecar(c sidecarConfig) *sidecar {
	t := w.t
	t.Helper()
	if c.verifier == nil {
		c.verifier = w.verifier
	}
	sc := &sidecar{t: t, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	metrics := callout.NewMetrics(sc.reg)
	var err error
	sc.handler, err = callout.NewHandler(callout.HandlerConfig{
		Verifier: c.verifier, Policies: w.store, SigningKeys: c.keys, XKey: c.xkey,
		Account: "APP", Logger: w.log, Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	sc.svc, err = callout.NewService(callout.ServiceConfig{
		URL: c.url, Credentials: c.creds, Handler: sc.handler, Workers: c.workers, QueueSize: c.queue, RequestTimeout: c.requestTimeout,
		Logger: w.log, Metrics: metrics, ReconnectWait: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.downReport > 0 {
		sc.svc.SetDownReport(c.downReport)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sc.cancel = cancel
	go func() { sc.done <- sc.svc.Run(ctx) }()
	t.Cleanup(func() {
		if err := sc.stop(); err != nil {
			t.Errorf("service: %v", err)
		}
	})
	return sc
}

// stop cancels the service's context and returns what Run returned.
func (sc *sidecar) stop() error {
	sc.once.Do(func() {
		sc.cancel()
		select {
		case sc.stopErr = <-sc.done:
		case <-time.After(15 * time.Second):
			sc.stopErr = errors.New("Run did not return within 15s of cancellation")
		}
	})
	return sc.stopErr
}

func (sc *sidecar) waitReady() {
	sc.t.Helper()
	testsupport.WaitFor(sc.t, "service ready", 10*time.Second, func() bool { return sc.svc.Ready() == nil })
}

// undecided returns the requests the service did not allow, by result and reason, leaving out
// the ones without any credential (a server re-authorizing its clients on reload sends those).
func (sc *sidecar) undecided() map[string]float64 {
	sc.t.Helper()
	mfs, err := sc.reg.Gather()
	if err != nil {
		sc.t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "nats_callout_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["result"] == callout.ResultAllowed || l["reason"] == "no_token" || m.GetCounter().GetValue() == 0 {
				continue
			}
			out[l["result"]+"/"+l["reason"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

// metric reads a counter or gauge from the sidecar's registry; labels are name, value pairs.
func (sc *sidecar) metric(name string, labels ...string) float64 {
	sc.t.Helper()
	return testsupport.Metric(sc.t, sc.reg, name, labels...)
}

// secretVolume lays out and updates a directory the way the kubelet's atomic writer does for
// a Secret volume: the payload in a timestamped directory, ..data pointing at it, and one
// symlink per key through ..data. An update writes a new timestamped directory and renames a
// ..data_tmp symlink over ..data, then removes the old directory.
type secretVolume struct {
	t   testing.TB
	dir string
	key string
}

func newSecretVolume(t testing.TB, key, content string) *secretVolume {
	t.Helper()
	v := &secretVolume{t: t, dir: filepath.Join(t.TempDir(), "secret"), key: key}
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v.update(content)
	if err := os.Symlink(filepath.Join("..data", key), v.path()); err != nil {
		t.Fatal(err)
	}
	return v
}

// path is where the container reads the key.
func (v *secretVolume) path() string { return filepath.Join(v.dir, v.key) }

// update swaps in new content and returns the instant of the ..data swap.
func (v *secretVolume) update(content string) time.Time {
	t := v.t
	t.Helper()
	old, err := os.Readlink(filepath.Join(v.dir, "..data"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	ts, err := os.MkdirTemp(v.dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, v.key), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	swapped := time.Now()
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
	return swapped
}

// load connects clients continuously, each connection authorized by the callout and closed
// again, from a few goroutines, until stopped.
type load struct {
	t      testing.TB
	ok     atomic.Int64
	failed atomic.Int64
	stopCh chan struct{}
	wg     sync.WaitGroup
	// gate is held for reading by each connect attempt; pausing takes it for writing.
	gate sync.RWMutex

	mu       sync.Mutex
	failures []failure
}

// failure is a client connect that failed.
type failure struct {
	url  string
	span interval
	err  error
}

// maxConnectsPerClient bounds a load that is never stopped.
const maxConnectsPerClient = 5000

func startLoad(t testing.TB, token string, clients int, urls ...string) *load {
	t.Helper()
	l := &load{t: t, stopCh: make(chan struct{})}
	for i := range clients {
		url := urls[i%len(urls)]
		l.wg.Go(func() {
			for range maxConnectsPerClient {
				select {
				case <-l.stopCh:
					return
				default:
				}
				l.gate.RLock()
				start := time.Now()
				nc, err := nats.Connect(url, nats.Token(token), nats.MaxReconnects(0), nats.Timeout(5*time.Second))
				l.gate.RUnlock()
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.failures = append(l.failures, failure{url: url, span: interval{start, time.Now()}, err: err})
					l.mu.Unlock()
					continue
				}
				nc.Close()
				l.ok.Add(1)
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

// reload has srv reload its config while the load runs. Under the race detector the load
// pauses for the reload instead: nats-server v2.15.2 has data races between a config reload
// re-authorizing its clients and the auth callout of clients connecting at that moment
// (auth.go:927 reads client options that auth_callout.go:334 writes; auth.go:718 reads
// the client's account that client.go:905 sets), which -race reports as a test failure.
func (l *load) reload(srv *natsServer, change func(*natsConf)) {
	l.t.Helper()
	if raceDetector {
		l.gate.Lock()
		defer l.gate.Unlock()
	}
	srv.reload(change)
}

// progress waits until n more clients have connected: traffic flows in the current state.
func (l *load) progress(n int64) {
	l.t.Helper()
	target := l.ok.Load() + n
	testsupport.WaitFor(l.t, fmt.Sprintf("%d more client connects", n), 10*time.Second, func() bool { return l.ok.Load() >= target })
}

func (l *load) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

// check stops the load and fails the test if any connect failed, except those that were
// under way while one of servers reloaded its config (see natsServer.duringReload).
func (l *load) check(what string, servers ...*natsServer) {
	l.t.Helper()
	l.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	var excused, failed []string
	for _, f := range l.failures {
		line := fmt.Sprintf("%s-%s %s: %v", f.span.start.Format("15:04:05.000"), f.span.end.Format("15:04:05.000"), f.url, f.err)
		if slices.ContainsFunc(servers, func(n *natsServer) bool { return n.url() == f.url && n.duringReload(f.span) }) {
			excused = append(excused, line)
			continue
		}
		failed = append(failed, line)
	}
	l.t.Logf("%s: %d client connects, %d failed, %d of them while the server reloaded its config", what, l.ok.Load(), len(l.failures), len(excused))
	for _, e := range excused {
		l.t.Logf("during a reload: %s", e)
	}
	if len(failed) > 0 {
		l.t.Errorf("%s: %d client connects failed, want 0:\n%s", what, len(failed), strings.Join(failed[:min(len(failed), 10)], "\n"))
	}
}

// goroutineRE finds the id at the head of each goroutine's stack.
var goroutineRE = regexp.MustCompile(`^goroutine (\d+) `)

// goroutines returns the running goroutines' stacks by id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if m := goroutineRE.FindStringSubmatch(g); m != nil {
			out[m[1]] = g
		}
	}
	return out
}

// checkNoLeaks waits until every goroutine started since before that runs nats.go or callout
// code has exited, and fails with their stacks if some have not.
func checkNoLeaks(t testing.TB, before map[string]string) {
	t.Helper()
	var leaked []string
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		leaked = leaked[:0]
		for id, stack := range goroutines() {
			if _, old := before[id]; old {
				continue
			}
			if strings.Contains(stack, "github.com/nats-io/nats.go") || strings.Contains(stack, "nats-k8s-oidc-callout/callout.") {
				leaked = append(leaked, stack)
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still running after the service stopped:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		<-tick.C
	}
}

// gatedVerifier holds every verification until its gate opens, so that requests are truly in
// flight when a test acts.
type gatedVerifier struct {
	next    callout.TokenVerifier
	entered atomic.Int64
	gate    chan struct{}
}

func newGatedVerifier(next callout.TokenVerifier) *gatedVerifier {
	return &gatedVerifier{next: next, gate: make(chan struct{})}
}

func (g *gatedVerifier) Verify(ctx context.Context, token string) (kube.Identity, error) {
	g.entered.Add(1)
	select {
	case <-g.gate:
	case <-ctx.Done():
	}
	return g.next.Verify(ctx, token)
}

func (g *gatedVerifier) open() { close(g.gate) }
