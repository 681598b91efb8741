// Command nats-k8s-oidc-callout answers NATS auth callout requests for Kubernetes workloads:
// a client connects with its ServiceAccount token and gets a NATS user scoped by the
// ServiceAccount's namespace and annotations.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

const defaultJWKSURL = "https://kubernetes.default.svc/openid/v1/jwks"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, versionString())
	default:
		err = fmt.Errorf("unknown command %q (commands: serve, version)", cmd)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nats-k8s-oidc-callout:", err)
		return 1
	}
	return 0
}

func versionString() string {
	return fmt.Sprintf("nats-k8s-oidc-callout %s (commit %s, %s)", version, commit, runtime.Version())
}

// config is every setting of the serve command. Each comes from an environment variable and
// can be overridden by the flag of the same name in lower-case kebab form.
type config struct {
	NATSURL        string
	CredsFile      string
	SigningKeyFile string
	Account        string
	XKeyFile       string
	InCluster      bool
	Kubeconfig     string
	JWKSURL        string
	Issuer         string
	Audience       string
	LogLevel       string
	LogFormat      string
	HTTPAddr       string
	Namespaces     string
	MaxTTL         time.Duration
	Workers        int
	RequestTimeout time.Duration
	DefaultPub     string
	DefaultSub     string
	JWKSRefresh    time.Duration
	ShowVersion    bool

	jwksURLSet bool
}

// envSource reads settings from the environment and remembers the first bad one.
type envSource struct {
	lookup func(string) (string, bool)
	err    error
	set    map[string]bool
}

func (e *envSource) str(key, def string) string {
	if v, ok := e.lookup(key); ok && v != "" {
		e.set[key] = true
		return v
	}
	return def
}

func (e *envSource) bool(key string, def bool) bool {
	v := e.str(key, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s: %q is not a boolean (use true or false)", key, v)
	}
	return b
}

func (e *envSource) duration(key string, def time.Duration) time.Duration {
	v := e.str(key, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s: %q is not a duration (e.g. 90s, 1h)", key, v)
	}
	return d
}

func (e *envSource) int(key string, def int) int {
	v := e.str(key, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s: %q is not an integer", key, v)
	}
	return n
}

// parseConfig reads the environment, then flags, then validates.
func parseConfig(args []string, lookup func(string) (string, bool), output io.Writer) (config, error) {
	env := &envSource{lookup: lookup, set: map[string]bool{}}
	var c config
	fs := flag.NewFlagSet("nats-k8s-oidc-callout serve", flag.ContinueOnError)
	fs.SetOutput(output)
	s := func(p *string, name, key, def, usage string) {
		fs.StringVar(p, name, env.str(key, def), usage+" (env "+key+")")
	}
	s(&c.NATSURL, "nats-url", "NATS_URL", "nats://127.0.0.1:4222", "nats-server URL; may carry user:password")
	s(&c.CredsFile, "nats-creds-file", "NATS_CREDS_FILE", "", "the service's own NATS login: a .creds file or a user nkey seed file")
	s(&c.SigningKeyFile, "nats-signing-key-file", "NATS_SIGNING_KEY_FILE", "", "issuer account seed(s) (SA...) that sign responses and user JWTs (required)")
	s(&c.Account, "nats-account", "NATS_ACCOUNT", "", "target account users are placed in (required)")
	s(&c.XKeyFile, "nats-xkey-file", "NATS_XKEY_FILE", "", "curve seed (SX...) for encrypted callouts; must match auth_callout.xkey")
	fs.BoolVar(&c.InCluster, "k8s-in-cluster", env.bool("K8S_IN_CLUSTER", true), "use the pod's in-cluster Kubernetes config; false uses --kubeconfig (env K8S_IN_CLUSTER)")
	s(&c.Kubeconfig, "kubeconfig", "KUBECONFIG", "", "kubeconfig file when not in cluster (default ~/.kube/config)")
	s(&c.JWKSURL, "jwks-url", "JWKS_URL", defaultJWKSURL, "JWKS of the ServiceAccount token issuer")
	s(&c.Issuer, "jwt-issuer", "JWT_ISSUER", "https://kubernetes.default.svc", "expected token issuer (iss)")
	s(&c.Audience, "jwt-audience", "JWT_AUDIENCE", "nats", "audience tokens must carry (aud)")
	s(&c.LogLevel, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	s(&c.LogFormat, "log-format", "LOG_FORMAT", "json", "json or text")
	s(&c.HTTPAddr, "http-addr", "HTTP_ADDR", ":8080", "address for /healthz, /readyz and /metrics")
	s(&c.Namespaces, "watch-namespaces", "WATCH_NAMESPACES", "", "comma-separated namespaces whose ServiceAccounts may log in (default all)")
	fs.DurationVar(&c.MaxTTL, "user-jwt-max-ttl", env.duration("USER_JWT_MAX_TTL", 0), "cap on user JWT lifetime; 0 means the token's own expiry (env USER_JWT_MAX_TTL)")
	fs.IntVar(&c.Workers, "workers", env.int("CALLOUT_WORKERS", 0), "concurrent requests; 0 means 4 per CPU (env CALLOUT_WORKERS)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", env.duration("CALLOUT_REQUEST_TIMEOUT", 1500*time.Millisecond), "per-request deadline, below the server's authorization timeout (env CALLOUT_REQUEST_TIMEOUT)")
	s(&c.DefaultPub, "default-pub-subjects", "DEFAULT_PUB_SUBJECTS", "{namespace}.>", "subjects every ServiceAccount may publish to; {namespace}, {serviceaccount}, {inbox} are replaced")
	s(&c.DefaultSub, "default-sub-subjects", "DEFAULT_SUB_SUBJECTS", "{namespace}.>,{inbox}.>", "subjects every ServiceAccount may subscribe to")
	fs.DurationVar(&c.JWKSRefresh, "jwks-refresh-interval", env.duration("JWKS_REFRESH_INTERVAL", time.Hour), "background JWKS refresh; unknown key IDs also trigger a (rate-limited) refresh (env JWKS_REFRESH_INTERVAL)")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	if env.err != nil {
		return c, env.err
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.jwksURLSet = env.set["JWKS_URL"]
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "jwks-url" {
			c.jwksURLSet = true
		}
	})
	if c.ShowVersion {
		return c, nil
	}
	return c, c.validate()
}

func (c config) validate() error {
	u, err := url.Parse(strings.Split(c.NATSURL, ",")[0])
	if err != nil || u.Host == "" {
		return fmt.Errorf("NATS_URL: %q is not a URL like nats://127.0.0.1:4222", c.NATSURL)
	}
	switch {
	case c.SigningKeyFile == "":
		return errors.New("NATS_SIGNING_KEY_FILE is required: a file with the issuer account seed (SA...) named by auth_callout.issuer")
	case c.Account == "":
		return errors.New("NATS_ACCOUNT is required: the account users are placed in (e.g. APP)")
	case c.Account == "SYS" || c.Account == "$SYS":
		return fmt.Errorf("NATS_ACCOUNT: %q is the system account; users must never be placed there", c.Account)
	case c.CredsFile == "" && u.User == nil:
		return errors.New("NATS_CREDS_FILE is required unless NATS_URL carries user:password")
	case c.Audience == "":
		return errors.New("JWT_AUDIENCE must not be empty")
	case c.Issuer == "":
		return errors.New("JWT_ISSUER must not be empty")
	case c.MaxTTL < 0:
		return errors.New("USER_JWT_MAX_TTL must not be negative")
	case c.Workers < 0:
		return errors.New("CALLOUT_WORKERS must not be negative")
	case c.RequestTimeout <= 0 || c.RequestTimeout > 10*time.Second:
		return fmt.Errorf("CALLOUT_REQUEST_TIMEOUT: %s must be above 0 and below the server's authorization timeout", c.RequestTimeout)
	case c.JWKSRefresh < time.Minute:
		return fmt.Errorf("JWKS_REFRESH_INTERVAL: %s is too short (minimum 1m)", c.JWKSRefresh)
	}
	if _, err := url.ParseRequestURI(c.JWKSURL); err != nil {
		return fmt.Errorf("JWKS_URL: %q is not a URL", c.JWKSURL)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fmt.Errorf("LOG_FORMAT: %q must be json or text", c.LogFormat)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("HTTP_ADDR: %q is not host:port (e.g. :8080)", c.HTTPAddr)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("LOG_LEVEL: %q must be debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// kubeConfig returns the Kubernetes client config: in-cluster, or from a kubeconfig file.
func kubeConfig(c config) (*rest.Config, error) {
	if c.InCluster {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("K8S_IN_CLUSTER=true but no in-cluster config (set K8S_IN_CLUSTER=false and KUBECONFIG outside a pod): %w", err)
		}
		return rc, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if c.Kubeconfig != "" {
		rules.ExplicitPath = c.Kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("KUBECONFIG: %w", err)
	}
	return rc, nil
}

// jwksClient picks the JWKS URL and the HTTP client to fetch it with. A JWKS served by the API
// server is fetched with the Kubernetes client's CA and credentials, so it works in a pod and
// with a kubeconfig alike.
func jwksClient(c config, rc *rest.Config) (string, *http.Client, error) {
	jwksURL := c.JWKSURL
	if !c.jwksURLSet && !c.InCluster {
		jwksURL = strings.TrimSuffix(rc.Host, "/") + "/openid/v1/jwks"
	}
	u, err := url.Parse(jwksURL)
	if err != nil {
		return "", nil, fmt.Errorf("JWKS_URL: %w", err)
	}
	apiHost, _ := url.Parse(rc.Host)
	servedByAPI := u.Hostname() == "kubernetes.default.svc" || u.Hostname() == "kubernetes.default.svc.cluster.local" ||
		(apiHost != nil && u.Host == apiHost.Host)
	if !servedByAPI {
		return jwksURL, &http.Client{Timeout: 10 * time.Second}, nil
	}
	rt, err := rest.TransportFor(rc)
	if err != nil {
		return "", nil, fmt.Errorf("JWKS_URL: HTTP client from the Kubernetes config: %w", err)
	}
	return jwksURL, &http.Client{Transport: rt, Timeout: 10 * time.Second}, nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseConfig(args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	if c.ShowVersion {
		fmt.Fprintln(stdout, versionString())
		return nil
	}
	log := newLogger(stderr, c.LogLevel, c.LogFormat)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Name: "nats_callout_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "commit", "goversion"}).WithLabelValues(version, commit, runtime.Version()).Set(1)

	rc, err := kubeConfig(c)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	jwksURL, httpClient, err := jwksClient(c, rc)
	if err != nil {
		return err
	}
	return serve(ctx, c, deps{client: client, jwksURL: jwksURL, httpClient: httpClient, log: log, reg: reg})
}

// deps are the outside-world parts serve runs against; dev mode supplies its own.
type deps struct {
	client     kubernetes.Interface
	jwksURL    string
	httpClient *http.Client
	log        *slog.Logger
	reg        *prometheus.Registry
	// listener, if set, is used instead of listening on HTTPAddr.
	listener net.Listener
	// started, if set, is called once every component is running.
	started func()
}

// serve wires the components and runs them until ctx is done.
func serve(ctx context.Context, c config, d deps) error {
	log, reg := d.log, d.reg
	watcher, err := reload.NewWatcher(log, reg)
	if err != nil {
		return err
	}
	signingKeys, err := reload.Add(watcher, "signing_key", c.SigningKeyFile, callout.ParseSigningKeys, func(k *callout.KeyRing) {
		log.Info("signing keys reloaded", "issuers", k)
	})
	if err != nil {
		return fmt.Errorf("NATS_SIGNING_KEY_FILE: %w", err)
	}
	xkey := func() *callout.XKey { return nil }
	if c.XKeyFile != "" {
		f, err := reload.Add(watcher, "xkey", c.XKeyFile, callout.ParseXKey, func(x *callout.XKey) {
			log.Info("xkey reloaded", "xkey", x)
		})
		if err != nil {
			return fmt.Errorf("NATS_XKEY_FILE: %w", err)
		}
		xkey = f.Current
	}
	var svc *callout.Service
	creds := func() *callout.Credentials { return nil }
	if c.CredsFile != "" {
		f, err := reload.Add(watcher, "creds", c.CredsFile, callout.ParseCredentials, func(cr *callout.Credentials) {
			log.Info("NATS credentials reloaded", "user", cr)
			if svc != nil {
				svc.Rotate()
			}
		})
		if err != nil {
			return fmt.Errorf("NATS_CREDS_FILE: %w", err)
		}
		creds = f.Current
	}

	defaults := kube.PolicyDefaults{Pub: splitList(c.DefaultPub), Sub: splitList(c.DefaultSub)}
	store, err := kube.NewStore(d.client, kube.StoreConfig{
		Namespaces: splitList(c.Namespaces), Defaults: defaults, Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("DEFAULT_PUB_SUBJECTS/DEFAULT_SUB_SUBJECTS: %w", err)
	}

	g, ctx := errgroup.WithContext(ctx)
	verifier, err := kube.NewVerifier(ctx, kube.VerifierConfig{
		JWKSURL: d.jwksURL, HTTPClient: d.httpClient, Issuer: c.Issuer, Audience: c.Audience,
		RefreshInterval: c.JWKSRefresh, Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("JWKS_URL: %w", err)
	}

	metrics := callout.NewMetrics(reg)
	handler, err := callout.NewHandler(callout.HandlerConfig{
		Verifier: verifier, Policies: store, SigningKeys: signingKeys.Current, XKey: xkey,
		Account: c.Account, MaxTTL: c.MaxTTL, Logger: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	svc, err = callout.NewService(callout.ServiceConfig{
		URL: c.NATSURL, Credentials: creds, Handler: handler, Workers: c.Workers,
		RequestTimeout: c.RequestTimeout, Logger: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}

	checks := []check{
		{"informer", func() error {
			if !store.HasSynced() {
				return errors.New("ServiceAccount informer has not synced")
			}
			return nil
		}},
		{"jwks", func() error {
			if verifier.KeyCount() == 0 {
				return fmt.Errorf("no JWKS keys loaded from %s", d.jwksURL)
			}
			return nil
		}},
		{"nats", svc.Ready},
		{"signing_key", func() error {
			if len(signingKeys.Current().PublicKeys()) == 0 {
				return errors.New("no signing key loaded")
			}
			return nil
		}},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ready(w, checks, handler)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln := d.listener
	if ln == nil {
		if ln, err = net.Listen("tcp", c.HTTPAddr); err != nil {
			return fmt.Errorf("HTTP_ADDR: %w", err)
		}
	}

	log.Info("starting", "version", version, "commit", commit, "nats_url", c.NATSURL, "account", c.Account,
		"issuers", signingKeys.Current(), "jwks_url", d.jwksURL, "jwt_issuer", c.Issuer, "audience", c.Audience,
		"http_addr", ln.Addr().String(), "encrypted", c.XKeyFile != "")

	svcDone := make(chan struct{})
	g.Go(func() error { return watcher.Run(ctx) })
	g.Go(func() error { return store.Run(ctx) })
	g.Go(func() error {
		defer close(svcDone)
		return svc.Run(ctx)
	})
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
	if d.started != nil {
		d.started()
	}
	err = g.Wait()
	log.Info("stopped")
	return err
}

type check struct {
	name string
	fn   func() error
}

// ready writes one line per readiness condition and answers 503 if any fails.
func ready(w http.ResponseWriter, checks []check, h *callout.Handler) {
	var b strings.Builder
	ok := true
	for _, c := range checks {
		if err := c.fn(); err != nil {
			ok = false
			fmt.Fprintf(&b, "[-] %s: %v\n", c.name, err)
		} else {
			fmt.Fprintf(&b, "[+] %s ok\n", c.name)
		}
	}
	// A server expecting an issuer the service lacks is reported but does not fail readiness:
	// an unready sidecar would take its whole NATS pod out of service.
	if want, bad := h.UnknownIssuer(10 * time.Minute); bad {
		fmt.Fprintf(&b, "[!] issuer: a nats-server expects issuer %s, which NATS_SIGNING_KEY_FILE does not hold\n", want)
	}
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	io.WriteString(w, b.String())
}

// publicKey of a seed, for messages; never the seed itself.
func publicKey(kp nkeys.KeyPair) string {
	pub, _ := kp.PublicKey()
	return pub
}
