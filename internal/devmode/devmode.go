// Package devmode is the dev command: it runs the service as production does, through the
// sidecar's run loop, with embedded stand-ins only where a cluster would be: nats-server, the
// token issuer and its JWKS, and (without --kubeconfig) the API server. It prints commands to
// try it, or with --check runs them as a self-test.
//
// The embedded nats-server is left out of builds with -tags nodevserver (the container image);
// dev mode then fails with an error saying so.
package devmode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/metadata"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/logging"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/sidecar"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

const (
	// targetAccount is the account dev mode places workloads in.
	targetAccount = "APP"
	// audience is the audience dev tokens carry and the service expects, as in production.
	audience = "nats"
	// readyTimeout bounds the wait for /readyz; a real cluster's informer may take a while.
	readyTimeout = time.Minute
	// stepTimeout bounds one --check step.
	stepTimeout = 3 * time.Second
)

// instance is one run of dev mode: the stand-ins it started and the service's settings.
type instance struct {
	c   settings.Dev
	dir string
	log *slog.Logger

	nats      natsInstance
	issuer    *kubefake.TokenIssuer
	issuerURL string
	jwksLn    net.Listener
	jwksSrv   *http.Server
	httpLn    net.Listener
	// cluster is the in-memory API server; nil with --kubeconfig.
	cluster *kubefake.MemoryCluster
	client  metadata.Interface
	// list re-reads the ServiceAccounts before each token refresh; nil without --kubeconfig.
	list   func(context.Context) ([]kube.ServiceAccount, error)
	serve  settings.Serve
	tokens *tokenFiles
	reg    *prometheus.Registry
	// watcher is the file watcher the manifest and the service's credentials share.
	watcher *reload.Watcher
}

// Run runs dev mode with c until ctx is done or, with --check, the self-test has run. stdout
// gets the instructions (or the PASS/FAIL lines), stderr the service's log. version and commit
// label the service as in production.
func Run(ctx context.Context, c settings.Dev, stdout, stderr io.Writer, version, commit string) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	level, _ := settings.ParseLevel(c.Log.Level) // settings.ParseDev has checked it
	log := logging.New(stderr, level, c.Log.Format)
	logging.RouteKlog(log)
	dir, cleanup, err := workDir(c.Dir)
	if err != nil {
		return err
	}
	defer func() {
		if rmErr := cleanup(); rmErr != nil && err == nil {
			err = rmErr
		}
	}()

	in := &instance{c: c, dir: dir, log: log, reg: prometheus.NewRegistry()}
	defer in.close()
	if err := in.start(ctx, stdout); err != nil {
		return err
	}
	return in.run(ctx, cancel, stdout, version, commit)
}

// workDir returns --dir, created if need be, or a new temporary directory; cleanup removes the
// temporary one.
func workDir(dir string) (string, func() error, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", nil, fmt.Errorf("--dir: %w", err)
		}
		return dir, func() error { return nil }, nil
	}
	dir, err := os.MkdirTemp("", "nats-callout-dev-")
	if err != nil {
		return "", nil, fmt.Errorf("dev: temporary directory: %w", err)
	}
	return dir, func() error {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("dev: remove %s: %w", dir, err)
		}
		return nil
	}, nil
}

// start starts the stand-ins, in order: nats-server, the token issuer, the HTTP listener, the
// ServiceAccount source; then it settles the service's settings and mints the first tokens.
func (in *instance) start(ctx context.Context, stdout io.Writer) error {
	var err error
	if in.nats, err = startNATS(in.dir, in.c.Port, in.c.XKey); err != nil {
		return err
	}
	if in.nats.busy {
		fmt.Fprintf(stdout, "Port %d is busy: nats-server listens on %s instead.\n", in.c.Port, in.nats.url)
	}
	if err := in.startIssuer(ctx); err != nil {
		return err
	}
	httpLn, httpBusy, err := listenFallback(in.c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	in.httpLn = httpLn
	if httpBusy {
		fmt.Fprintf(stdout, "Address %s is busy: HTTP listens on %s instead.\n", in.c.HTTPAddr, httpLn.Addr())
	}
	if err := in.connectCluster(); err != nil {
		return err
	}
	if err := in.settle(); err != nil {
		return err
	}
	in.tokens = &tokenFiles{issuer: in.issuer, dir: filepath.Join(in.dir, "tokens"), audience: audience, ttl: in.c.TokenTTL, log: in.log}
	if in.watcher, err = reload.NewWatcher(in.log, in.reg); err != nil {
		return err
	}
	if in.c.Kubeconfig != "" {
		return in.listCluster(ctx)
	}
	return in.watchManifest(ctx)
}

// settle sets the service's settings: serve's defaults, with what dev mode started.
func (in *instance) settle() error {
	s := settings.ServeDefaults()
	s.NATSURL = in.nats.url
	s.CredsFile = in.nats.keys.serviceFile
	s.SigningKeyFile = in.nats.keys.issuerFile
	s.SystemCredsFile = in.nats.keys.systemFile
	s.Account = targetAccount
	if in.c.XKey {
		s.XKeyFile = in.nats.keys.xkeyFile
	}
	s.Kube.InCluster = false
	s.JWKSURL, s.JWKSURLSet = in.issuerURL+"/openid/v1/jwks", true
	s.Issuer = in.issuerURL
	s.Audience = audience
	s.Log = in.c.Log
	s.HTTPAddr = in.httpLn.Addr().String()
	s.Policy.Namespaces = in.c.Namespaces // set by connectCluster with --kubeconfig, else ""
	// Dev mode's tokens are bound to no pod, and a --kubeconfig user may not list pods.
	s.VerifyBoundObjects = false
	if err := s.Validate(); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	in.serve = s
	return nil
}

// run runs the service, the issuer's server and the token refresh, and once the service is
// ready prints the instructions or (--check) runs the self-test and stops.
func (in *instance) run(ctx context.Context, cancel context.CancelFunc, stdout io.Writer, version, commit string) error {
	d := sidecar.Deps{
		Client: in.client, JWKSURL: in.serve.JWKSURL, HTTPClient: &http.Client{Timeout: 10 * time.Second},
		Log: in.log, Registry: in.reg, Listener: in.httpLn, Watcher: in.watcher, Version: version, Commit: commit,
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sidecar.Run(gctx, in.serve, d) })
	g.Go(func() error {
		if err := in.jwksSrv.Serve(in.jwksLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("dev: JWKS server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, stop := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
		defer stop()
		return in.jwksSrv.Shutdown(sctx)
	})
	g.Go(func() error { return in.tokens.run(gctx, in.list) })
	g.Go(func() error {
		if err := waitReady(gctx, "http://"+in.httpLn.Addr().String()+"/readyz"); err != nil {
			return err
		}
		if gctx.Err() != nil {
			if in.c.Check && ctx.Err() != nil {
				return errors.New("dev --check: interrupted")
			}
			return nil // another component failed and says why, or dev is stopping
		}
		return in.present(gctx, cancel, stdout)
	})
	return g.Wait()
}

// present shows the scenario working and prints the instructions, or (--check) runs the
// self-test, reports it and stops dev mode.
func (in *instance) present(ctx context.Context, cancel context.CancelFunc, stdout io.Writer) error {
	sc := scenario{
		url: in.nats.url, http: "http://" + in.httpLn.Addr().String(),
		conf: in.nats.conf, manifest: in.c.Manifest, kubeconfig: in.c.Kubeconfig,
		namespaces: in.c.Namespaces, encrypted: in.c.XKey, tokens: in.tokens,
	}
	sc.plan, sc.planErr = planDemo(parseAccounts(in.tokens.current(), in.serve.Policy.Defaults()))
	if !in.c.Check {
		// Show it working before anything else: the allowed and the refused publish,
		// run now with nats.go, above the commands to try by hand.
		var shown strings.Builder
		sc.check(ctx, &shown, in.issuerURL, true)
		sc.demo = shown.String()
		sc.print(stdout)
		return nil
	}
	failed := sc.check(ctx, stdout, in.issuerURL, false)
	cancel()
	if failed > 0 {
		return fmt.Errorf("dev --check: %d step(s) failed", failed)
	}
	return nil
}

// close stops what start started, in reverse order.
func (in *instance) close() {
	if in.cluster != nil {
		in.cluster.Close()
	}
	if in.httpLn != nil {
		_ = in.httpLn.Close() // a no-op once the service has closed it
	}
	if in.jwksLn != nil {
		_ = in.jwksLn.Close() // a no-op once the server has closed it
	}
	if in.nats.stop != nil {
		in.nats.stop()
	}
}

// waitReady polls the service's /readyz until it answers 200.
func waitReady(ctx context.Context, url string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	last := "no answer"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = strings.TrimSpace(string(body))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dev: the service did not become ready within %s:\n%s", readyTimeout, last)
		}
		select {
		case <-ctx.Done():
			return nil // the caller tells stopping from failing
		case <-time.After(25 * time.Millisecond):
		}
	}
}
