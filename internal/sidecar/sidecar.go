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
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

// Deps are the outside-world parts Run works with: main builds the real ones, dev mode and
// tests their stand-ins.
type Deps struct {
	// Client reads ServiceAccount metadata (list and watch).
	Client metadata.Interface
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
	log, reg := d.Log, d.Registry
	promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Name: "nats_callout_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "commit", "goversion"}).WithLabelValues(d.Version, d.Commit, runtime.Version()).Set(1)

	watcher := d.Watcher
	if watcher == nil {
		var err error
		if watcher, err = reload.NewWatcher(log, reg); err != nil {
			return err
		}
	}
	f, err := loadFiles(c, watcher, log)
	if err != nil {
		return err
	}
	var op *operatorCheck
	var operator *callout.OperatorConfig
	if c.Operator() {
		if op, err = newOperatorCheck(log, reg, func() callout.OperatorSetup { return f.operatorSetup(c.Account) }); err != nil {
			return err
		}
		operator = &callout.OperatorConfig{CalloutAccount: func() string { return f.creds().Account() }, TargetKeys: f.targetKeys}
	}
	store, err := kube.NewStore(d.Client, kube.StoreConfig{
		Namespaces: c.Policy.WatchedNamespaces(), Defaults: c.Policy.Defaults(), Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("WATCH_NAMESPACES or DEFAULT_*_SUBJECTS: %w", err)
	}

	g, ctx := errgroup.WithContext(ctx)
	verifier, err := kube.NewVerifier(ctx, kube.VerifierConfig{
		JWKSURL: d.JWKSURL, HTTPClient: d.HTTPClient, Issuer: c.Issuer, Audience: c.Audience,
		RefreshInterval: c.JWKSRefresh, Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("JWKS_URL: %w", err)
	}
	metrics := callout.NewMetrics(reg)
	handler, err := callout.NewHandler(callout.HandlerConfig{
		Verifier: verifier, Policies: store, SigningKeys: f.signingKeys.Current, XKey: f.xkey,
		Account: c.Account, MaxTTL: c.MaxTTL, Logger: log, Metrics: metrics, Operator: operator,
	})
	if err != nil {
		return err
	}
	svc, err := callout.NewService(callout.ServiceConfig{
		URL: c.NATSURL, Credentials: f.creds, UseJWT: c.Operator(), TLS: c.TLS(), Handler: handler, Workers: c.Workers,
		RequestTimeout: c.RequestTimeout, Logger: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	ready := newReadiness(store, verifier, d.JWKSURL, svc, f, handler, op)
	srv := &http.Server{Handler: newMux(ready, reg), ReadHeaderTimeout: 5 * time.Second}
	ln := d.Listener
	if ln == nil {
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", c.HTTPAddr); err != nil {
			return fmt.Errorf("HTTP_ADDR: %w", err)
		}
	}

	log.Info("starting", "version", d.Version, "commit", d.Commit, "nats_url", callout.RedactURL(c.NATSURL), "account", c.Account,
		"issuers", f.signingKeys.Current(), "jwks_url", d.JWKSURL, "jwt_issuer", c.Issuer, "audience", c.Audience,
		"http_addr", ln.Addr().String(), "encrypted", c.XKeyFile != "", "tls", c.TLS() != nil)

	svcDone := make(chan struct{})
	g.Go(func() error { return watcher.Run(ctx) })
	g.Go(func() error { return store.Run(ctx) })
	g.Go(func() error {
		defer close(svcDone)
		return svc.Run(ctx)
	})
	g.Go(func() error { return react(ctx, f.changes, svc, op) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
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
		return srv.Shutdown(sctx)
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}

// react applies file changes to the running service: new NATS credentials rotate the
// connection, and in operator mode every change re-runs the setup check.
func react(ctx context.Context, ch *changes, svc *callout.Service, op *operatorCheck) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ch.signal:
		}
		if ch.creds.Swap(false) {
			svc.Rotate()
		}
		op.recheck()
	}
}
