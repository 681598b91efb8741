// Package sidecar is the service's run loop: it builds the callout handler and NATS service,
// the ServiceAccount store, the token verifier, the credential file watcher and the HTTP
// endpoints from the settings, in one order, and runs them until the context ends.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/metadata"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/revoke"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

// Deps are the outside-world parts Run works with: main builds the real ones, dev mode and
// tests their stand-ins.
type Deps struct {
	// Client reads ServiceAccount and pod metadata (list and watch), and the metadata of the
	// Secrets and nodes tokens are bound to (get).
	Client metadata.Interface
	// PodStatus reads a bound pod's addresses; required with BIND_SOURCE_IP.
	PodStatus kube.PodStatusGetter
	// JWKSURL and HTTPClient fetch the token issuer's keys.
	JWKSURL    string
	HTTPClient *http.Client
	Log        *slog.Logger
	// Registry receives every metric and is served on /metrics.
	Registry *prometheus.Registry
	// Listener, if set, serves HTTP instead of listening on HTTP_ADDR.
	Listener net.Listener
	// Watcher, if set, is the file watcher the credentials join (dev mode adds its manifest to
	// it first); Run runs it. Nil means a new one.
	Watcher *reload.Watcher
	// Version and Commit label nats_callout_build_info and the start-up log line.
	Version, Commit string
}

// Run builds the service from c and d and runs it until ctx is done or a component fails.
// On cancellation it stops taking requests, drains the NATS connection, then stops the
// informer, the watcher and (last, so probes see the shutdown) HTTP.
func Run(ctx context.Context, c settings.Serve, d Deps) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	s, err := build(ctx, c, d)
	if err != nil {
		return err
	}
	s.start(ctx, g)
	err = g.Wait()
	d.Log.Info("stopped")
	return err
}

// sidecar is the running service's parts.
type sidecar struct {
	watcher *reload.Watcher
	files   *files
	store   *kube.Store
	ns      *kube.NamespaceCache // nil unless NATS_ALLOWED_ACCOUNTS
	pods    *kube.PodCache       // nil unless VERIFY_BOUND_OBJECTS
	svc     *callout.Service
	revoker *revoke.Revoker // nil: live revocation is off
	op      *operatorCheck
	srv     *http.Server
	ln      net.Listener
}

// build makes every part, in the order they depend on each other: the files, the operator-mode
// check, the store and the verifier, the handler, the NATS service, then HTTP. ctx bounds the
// verifier's background refresh.
func build(ctx context.Context, c settings.Serve, d Deps) (*sidecar, error) {
	log, reg := d.Log, d.Registry
	promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Name: "nats_callout_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "commit", "goversion"}).WithLabelValues(d.Version, d.Commit, runtime.Version()).Set(1)

	s := &sidecar{watcher: d.Watcher}
	var err error
	if s.watcher == nil {
		if s.watcher, err = reload.NewWatcher(log, reg); err != nil {
			return nil, err
		}
	}
	if s.files, err = loadFiles(c, s.watcher, log); err != nil {
		return nil, err
	}
	var operator *callout.OperatorConfig
	if c.Operator() {
		allowed := c.Accounts.AllowedList()
		if s.op, err = newOperatorCheck(log, reg, func() callout.OperatorSetup { return s.files.operatorSetup(c.Account, allowed) }); err != nil {
			return nil, err
		}
		operator = &callout.OperatorConfig{CalloutAccount: func() string { return s.files.creds().Account() }, TargetKeys: s.files.targetKeys,
			AccountKeys: s.files.tenants.keysFor}
	}
	var onRevocation kube.RevocationSink
	if s.revoker, err = newRevoker(c, s.files, log, reg); err != nil {
		return nil, err
	} else if s.revoker != nil {
		onRevocation = s.revoker.Notify
	}
	accounts, err := s.buildAccounts(c, d, onRevocation)
	if err != nil {
		return nil, err
	}
	byAccount, err := c.AccountDefaults()
	if err != nil {
		return nil, err
	}
	if s.store, err = kube.NewStore(d.Client, kube.StoreConfig{
		Namespaces: c.Policy.WatchedNamespaces(), Defaults: c.Policy.Defaults(), Logger: log, Registerer: reg,
		Accounts: accounts, AccountDefaults: byAccount, OnRevocation: onRevocation,
	}); err != nil {
		return nil, fmt.Errorf("WATCH_NAMESPACES or DEFAULT_*_SUBJECTS: %w", err)
	}
	bound, sources, err := s.buildBound(c, d, onRevocation)
	if err != nil {
		return nil, err
	}
	verifier, err := kube.NewVerifier(ctx, kube.VerifierConfig{
		JWKSURL: d.JWKSURL, HTTPClient: d.HTTPClient, Issuer: c.Issuer, Audience: c.Audience,
		RefreshInterval: c.JWKSRefresh, TokenCacheSize: tokenCacheSize(c.TokenCacheSize), Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("JWKS_URL: %w", err)
	}
	metrics := callout.NewMetrics(reg)
	handler, err := callout.NewHandler(callout.HandlerConfig{
		Verifier: verifier, Policies: s.store, Bound: bound, Sources: sources, SigningKeys: s.files.signingKeys, XKey: s.files.xkey,
		Account: c.Account, MaxTTL: c.MaxTTL, Logger: log, Metrics: metrics, Operator: operator,
	})
	if err != nil {
		return nil, err
	}
	if s.svc, err = callout.NewService(callout.ServiceConfig{
		URL: c.NATSURL, Credentials: s.files.creds, UseJWT: c.Operator(), TLS: c.TLS(), Handler: handler, Workers: c.Workers,
		RequestTimeout: c.RequestTimeout, Logger: log, Metrics: metrics,
	}); err != nil {
		return nil, err
	}
	ready := newReadiness(s.store, s.pods, verifier, d.JWKSURL, s.svc, s.files, handler, s.op).
		withAccounts(s.ns, accounts, handler).withRevoker(s.revoker)
	s.srv = &http.Server{Handler: newMux(ready, reg), ReadHeaderTimeout: 5 * time.Second}
	if s.ln = d.Listener; s.ln == nil {
		if s.ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", c.HTTPAddr); err != nil {
			return nil, fmt.Errorf("HTTP_ADDR: %w", err)
		}
	}
	log.Info("starting", "version", d.Version, "commit", d.Commit, "nats_url", callout.RedactURL(c.NATSURL), "account", c.Account,
		"allowed_accounts", c.Accounts.AllowedList(),
		"issuers", s.files.signingKeys(), "jwks_url", d.JWKSURL, "jwt_issuer", c.Issuer, "audience", c.Audience,
		"http_addr", s.ln.Addr().String(), "encrypted", c.XKeyFile != "", "tls", c.TLS() != nil,
		"verify_bound_objects", c.VerifyBoundObjects, "bind_source_ip", c.BindSourceIP)
	return s, nil
}

// start runs every part in g until ctx is done.
func (s *sidecar) start(ctx context.Context, g *errgroup.Group) {
	svcDone := make(chan struct{})
	g.Go(func() error { return s.watcher.Run(ctx) })
	restoreGC := startupGC()
	g.Go(func() error { return s.store.Run(ctx) })
	if s.ns != nil {
		g.Go(func() error { return s.ns.Run(ctx) })
	}
	if s.pods != nil {
		g.Go(func() error { return s.pods.Run(ctx) })
	}
	g.Go(func() error {
		if s.store.WaitSynced(ctx) && (s.pods == nil || s.pods.WaitSynced(ctx)) {
			restoreGC()
		}
		return nil
	})
	g.Go(func() error {
		defer close(svcDone)
		return s.svc.Run(ctx)
	})
	if s.revoker != nil {
		g.Go(func() error { return s.revoker.Run(ctx) })
	}
	g.Go(func() error { return react(ctx, s.files.changes, s.svc, s.revoker, s.op) })
	g.Go(func() error {
		if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("HTTP server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		// HTTP stays up while the callout drains, so probes see the shutdown.
		<-ctx.Done()
		<-svcDone
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return s.srv.Shutdown(sctx)
	})
}

// react applies file changes to the running service: new NATS credentials rotate the
// connection (the system account user's, live revocation's), and in operator mode every change
// re-runs the setup check.
func react(ctx context.Context, ch *changes, svc *callout.Service, rv *revoke.Revoker, op *operatorCheck) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ch.signal:
		}
		if ch.creds.Swap(false) {
			svc.Rotate()
		}
		if ch.system.Swap(false) && rv != nil {
			rv.Rotate()
		}
		op.recheck()
	}
}

// tokenCacheSize is TOKEN_CACHE_SIZE as kube.VerifierConfig takes it: 0 there means the default,
// a negative size turns the cache off.
func tokenCacheSize(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
