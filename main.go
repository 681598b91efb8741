// Command nats-k8s-oidc-callout answers NATS auth callout requests for Kubernetes workloads:
// a client connects with its ServiceAccount token and gets a NATS user scoped by the
// ServiceAccount's namespace and annotations.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/atomicfile"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/installer"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

const defaultJWKSURL = "https://kubernetes.default.svc/openid/v1/jwks"

// The defaults of DEFAULT_PUB_SUBJECTS and DEFAULT_SUB_SUBJECTS: kube's built-in templates.
var (
	defaultPubSubjects = strings.Join(kube.DefaultPolicyDefaults().Pub, ",")
	defaultSubSubjects = strings.Join(kube.DefaultPolicyDefaults().Sub, ",")
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && (!strings.HasPrefix(args[0], "-") || args[0] == "--version" || args[0] == "-version") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, args, stdout, stderr)
	case "dev":
		err = runDev(ctx, args, stdout, stderr)
	case "init":
		err = runInit(args, stdout, stderr)
	case "explain":
		err = runExplain(ctx, args, os.LookupEnv, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
	default:
		err = fmt.Errorf("unknown command %q (commands: serve, dev, init, explain, version)", cmd)
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

// runInit generates the service's keys and writes the Secret manifest, the matching
// nats-server configuration and Helm values into a directory. Re-running it against an
// existing Secret is refused unless the issuer rotation is asked for explicitly.
func runInit(args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("nats-k8s-oidc-callout init", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var o installer.InstallOptions
	out := fset.String("out", "nats-callout", "output directory (secret.yaml is written with mode 0600)")
	fset.StringVar(&o.Namespace, "namespace", "", "namespace of the NATS release (required on first run)")
	fset.StringVar(&o.SecretName, "secret-name", "", "name of the Secret (default "+installer.DefaultSecretName+")")
	fset.StringVar(&o.CalloutAccount, "callout-account", "", "callout account holding only the service user (default "+installer.DefaultCalloutAccount+")")
	accounts := fset.String("account", "", "comma-separated target accounts; the first is NATS_ACCOUNT (default "+installer.DefaultTargetAccount+")")
	fset.StringVar(&o.SystemAccount, "system-account", "", "system account, never a callout target (default "+installer.DefaultSystemAccount+")")
	fset.BoolVar(&o.JetStream, "jetstream", false, "enable JetStream in the target and bypass accounts")
	fset.Func("bypass-user", "ACCOUNT=U... a user that logs in with its own nkey and never reaches the callout, e.g. NACK (repeatable)", func(s string) error {
		u, err := installer.ParseBypassUser(s)
		if err == nil {
			o.BypassUsers = append(o.BypassUsers, u)
		}
		return err
	})
	fset.BoolVar(&o.Rotate, "rotate", false, "rotate the issuer key: the new seed is added next to the old one")
	fset.BoolVar(&o.FinishRotation, "finish-rotation", false, "finish an issuer rotation: drop the old seed")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("init: unexpected arguments: %v", fset.Args())
	}
	o.TargetAccounts = splitList(*accounts)
	existing, err := os.ReadFile(filepath.Join(*out, installer.InstallSecretFile))
	switch {
	case err == nil:
		o.ExistingSecret = existing
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("init: %w", err)
	}
	files, err := installer.GenerateInstall(o)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := files.WriteDir(*out); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprint(stdout, files.NextSteps(*out))
	return nil
}

func versionString() string {
	return fmt.Sprintf("nats-k8s-oidc-callout %s (commit %s, %s)", version, commit, runtime.Version())
}

// config is every setting of the serve command. Each comes from an environment variable and
// can be overridden by the flag of the same name in lower-case kebab form.
type config struct {
	NATSURL         string
	CredsFile       string
	SigningKeyFile  string
	Account         string
	XKeyFile        string
	InCluster       bool
	Kubeconfig      string
	JWKSURL         string
	Issuer          string
	Audience        string
	LogLevel        string
	LogFormat       string
	HTTPAddr        string
	Namespaces      string
	MaxTTL          time.Duration
	Workers         int
	RequestTimeout  time.Duration
	TLSCAFile       string
	TLSCertFile     string
	TLSKeyFile      string
	TLSServerName   string
	DefaultPub      string
	DefaultSub      string
	AnnotationLimit string
	JWKSRefresh     time.Duration
	ShowVersion     bool
	// Operator mode (decentralized JWT).
	Mode                  string
	TargetSigningKeyFile  string
	CalloutAccountJWTFile string
	TargetAccountJWTFile  string

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

// runExplain prints what the service would grant a ServiceAccount, and whether it may publish
// or subscribe to given subjects: the same lookup and annotation parsing as a decision, with
// the same settings (DEFAULT_*_SUBJECTS, ANNOTATION_SUBJECT_LIMIT, WATCH_NAMESPACES,
// K8S_IN_CLUSTER, KUBECONFIG)
// from the environment, so that `kubectl exec` into the sidecar explains its own decisions.
func runExplain(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	env := &envSource{lookup: lookup, set: map[string]bool{}}
	var c config
	fs := flag.NewFlagSet("nats-k8s-oidc-callout explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: nats-k8s-oidc-callout explain [flags] NAMESPACE/SERVICEACCOUNT [SUBJECT...]\n\n"+
			"Prints the NATS permissions the service grants the ServiceAccount (from its annotations and the\n"+
			"defaults), the annotation entries it ignores, and for each SUBJECT whether publishing and\n"+
			"subscribing to it are allowed. Reads the ServiceAccount from the cluster, or from --manifest.\n\n")
		fs.PrintDefaults()
	}
	s := func(p *string, name, key, def, usage string) {
		fs.StringVar(p, name, env.str(key, def), usage+" (env "+key+")")
	}
	fs.BoolVar(&c.InCluster, "k8s-in-cluster", env.bool("K8S_IN_CLUSTER", false), "use the pod's in-cluster Kubernetes config (env K8S_IN_CLUSTER)")
	s(&c.Kubeconfig, "kubeconfig", "KUBECONFIG", "", "kubeconfig file when not in cluster (default ~/.kube/config)")
	s(&c.DefaultPub, "default-pub-subjects", "DEFAULT_PUB_SUBJECTS", defaultPubSubjects, "as for serve")
	s(&c.DefaultSub, "default-sub-subjects", "DEFAULT_SUB_SUBJECTS", defaultSubSubjects, "as for serve")
	s(&c.AnnotationLimit, "annotation-subject-limit", "ANNOTATION_SUBJECT_LIMIT", "", "as for serve")
	s(&c.Namespaces, "watch-namespaces", "WATCH_NAMESPACES", "", "as for serve")
	manifest := fs.String("manifest", "", "read the ServiceAccount from this manifest (YAML, as dev mode takes) instead of a cluster")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if env.err != nil {
		return env.err
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return errors.New("explain: NAMESPACE/SERVICEACCOUNT is required")
	}
	ns, name, ok := strings.Cut(fs.Arg(0), "/")
	if !ok || ns == "" || name == "" {
		return fmt.Errorf("explain: %q is not NAMESPACE/SERVICEACCOUNT", fs.Arg(0))
	}
	if err := c.validatePolicy(); err != nil {
		return err
	}
	if watched := splitList(c.Namespaces); len(watched) > 0 && !slices.Contains(watched, ns) {
		return fmt.Errorf("namespace %s is not in WATCH_NAMESPACES (%s): its tokens are refused (serviceaccount_not_found)", ns, c.Namespaces)
	}
	defaults := c.policyDefaults()

	var sa *kube.ServiceAccount
	if *manifest != "" {
		data, err := os.ReadFile(*manifest)
		if err != nil {
			return fmt.Errorf("--manifest: %w", err)
		}
		sas, err := kube.ParseServiceAccounts(data)
		if err != nil {
			return fmt.Errorf("--manifest %s: %w", *manifest, err)
		}
		for i := range sas {
			if sas[i].Namespace == ns && sas[i].Name == name {
				sa = &sas[i]
			}
		}
		if sa == nil {
			return fmt.Errorf("%s/%s is not in %s: a token of it would be refused (serviceaccount_not_found)", ns, name, *manifest)
		}
	} else {
		rc, err := kubeConfig(c)
		if err != nil {
			return err
		}
		client, err := metadata.NewForConfig(rc)
		if err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		sa, err = client.Resource(kube.ServiceAccountsResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("serviceaccount %s/%s: %w (a token of it would be refused if it does not exist)", ns, name, err)
		}
	}
	return explain(stdout, defaults, sa, fs.Args()[1:])
}

// explain writes the permissions of sa and the verdict on each subject.
func explain(w io.Writer, defaults kube.PolicyDefaults, sa *kube.ServiceAccount, subjects []string) error {
	if sa.DeletionTimestamp != nil {
		return fmt.Errorf("%s/%s is being deleted: its tokens are refused (serviceaccount_deleting)", sa.Namespace, sa.Name)
	}
	p, err := kube.ParsePolicy(defaults, sa.Namespace, sa.Name, sa.Annotations)
	if err != nil {
		return fmt.Errorf("%s/%s: its tokens are refused (%s): %w", sa.Namespace, sa.Name, callout.Reason(err), err)
	}
	perms := p.Permissions
	list := func(l []string) string {
		if len(l) == 0 {
			return "-"
		}
		return strings.Join(l, "  ")
	}
	fmt.Fprintf(w, "%s/%s", sa.Namespace, sa.Name)
	if sa.UID != "" {
		fmt.Fprintf(w, " (uid %s)", sa.UID)
	}
	fmt.Fprintf(w, "\n  publish    allow  %s\n             deny   %s\n", list(perms.PubAllow), list(perms.PubDeny))
	fmt.Fprintf(w, "  subscribe  allow  %s\n             deny   %s\n", list(perms.SubAllow), list(perms.SubDeny))
	responses := "one reply to each request it receives"
	if !perms.AllowResponses {
		responses = "none (nats.io/allow-responses is false)"
	}
	fmt.Fprintf(w, "  responses  %s\n  inbox      %s (nats.CustomInboxPrefix / nats --inbox-prefix)\n",
		responses, kube.InboxPrefix(sa.Namespace, sa.Name))
	for _, warning := range p.Warnings {
		fmt.Fprintf(w, "  ignored    %s\n", warning)
	}
	for _, subj := range subjects {
		if strings.ContainsAny(subj, "*>") {
			fmt.Fprintf(w, "%s: wildcards are not checked here; give a literal subject\n", subj)
			continue
		}
		verdict := func(ok bool) string {
			if ok {
				return "allowed"
			}
			return "refused"
		}
		fmt.Fprintf(w, "%s: publish %s, subscribe %s\n", subj, verdict(perms.AllowsPublish(subj)), verdict(perms.AllowsSubscribe(subj)))
	}
	return nil
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
	s(&c.TLSCAFile, "nats-tls-ca-file", "NATS_TLS_CA_FILE", "", "CA bundle (PEM) to verify nats-server's TLS certificate; setting any NATS_TLS_* turns TLS on")
	s(&c.TLSCertFile, "nats-tls-cert-file", "NATS_TLS_CERT_FILE", "", "client certificate (PEM) for a nats-server that verifies clients")
	s(&c.TLSKeyFile, "nats-tls-key-file", "NATS_TLS_KEY_FILE", "", "key (PEM) of NATS_TLS_CERT_FILE")
	s(&c.TLSServerName, "nats-tls-server-name", "NATS_TLS_SERVER_NAME", "", "name nats-server's certificate must carry (the sidecar dials 127.0.0.1), e.g. nats.nats.svc")
	s(&c.Mode, "nats-mode", "NATS_MODE", "", "server-config or operator (default: operator when NATS_ACCOUNT is an account public key A..., else server-config)")
	s(&c.TargetSigningKeyFile, "nats-target-signing-key-file", "NATS_TARGET_SIGNING_KEY_FILE", "", "operator mode: the target account's seed or unscoped signing key seed that signs user JWTs (default NATS_SIGNING_KEY_FILE)")
	s(&c.CalloutAccountJWTFile, "nats-callout-account-jwt-file", "NATS_CALLOUT_ACCOUNT_JWT_FILE", "", "operator mode, optional: the callout account's JWT, to check the setup at start-up")
	s(&c.TargetAccountJWTFile, "nats-target-account-jwt-file", "NATS_TARGET_ACCOUNT_JWT_FILE", "", "operator mode, optional: the target account's JWT, to detect a scoped signing key at start-up")
	fs.BoolVar(&c.InCluster, "k8s-in-cluster", env.bool("K8S_IN_CLUSTER", true), "use the pod's in-cluster Kubernetes config; false uses --kubeconfig (env K8S_IN_CLUSTER)")
	s(&c.Kubeconfig, "kubeconfig", "KUBECONFIG", "", "kubeconfig file when not in cluster (default ~/.kube/config)")
	s(&c.JWKSURL, "jwks-url", "JWKS_URL", defaultJWKSURL, "JWKS of the ServiceAccount token issuer")
	s(&c.Issuer, "jwt-issuer", "JWT_ISSUER", "https://kubernetes.default.svc", "expected token issuer (iss); auto reads it from the API server's OIDC discovery at start-up")
	s(&c.Audience, "jwt-audience", "JWT_AUDIENCE", "nats", "audience tokens must carry (aud)")
	s(&c.LogLevel, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	s(&c.LogFormat, "log-format", "LOG_FORMAT", "json", "json or text")
	s(&c.HTTPAddr, "http-addr", "HTTP_ADDR", ":8080", "address for /healthz, /readyz and /metrics")
	s(&c.Namespaces, "watch-namespaces", "WATCH_NAMESPACES", "", "comma-separated namespaces whose ServiceAccounts may log in (default all)")
	fs.DurationVar(&c.MaxTTL, "user-jwt-max-ttl", env.duration("USER_JWT_MAX_TTL", 0), "cap on user JWT lifetime; 0 means the token's own expiry (env USER_JWT_MAX_TTL)")
	fs.IntVar(&c.Workers, "workers", env.int("CALLOUT_WORKERS", 0), "concurrent requests; 0 means 4 per CPU (env CALLOUT_WORKERS)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", env.duration("CALLOUT_REQUEST_TIMEOUT", 1500*time.Millisecond), "per-request deadline, below the server's authorization timeout (env CALLOUT_REQUEST_TIMEOUT)")
	s(&c.DefaultPub, "default-pub-subjects", "DEFAULT_PUB_SUBJECTS", defaultPubSubjects, "subjects every ServiceAccount may publish to; {namespace}, {serviceaccount}, {inbox} are replaced")
	s(&c.DefaultSub, "default-sub-subjects", "DEFAULT_SUB_SUBJECTS", defaultSubSubjects, "subjects every ServiceAccount may subscribe to")
	s(&c.AnnotationLimit, "annotation-subject-limit", "ANNOTATION_SUBJECT_LIMIT", "", "subjects allow annotations may grant within, e.g. {namespace}.>; entries outside are dropped (default: no limit)")
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

// operator reports whether the service runs in operator (decentralized JWT) mode.
func (c config) operator() bool {
	if c.Mode == "" {
		return nkeys.IsValidPublicAccountKey(c.Account)
	}
	return c.Mode == "operator"
}

func (c config) validate() error {
	u, err := url.Parse(strings.Split(c.NATSURL, ",")[0])
	if err != nil || u.Host == "" {
		return fmt.Errorf("NATS_URL: %s is not a URL like nats://127.0.0.1:4222", callout.RedactURL(c.NATSURL))
	}
	switch c.Mode {
	case "", "server-config", "operator":
	default:
		return fmt.Errorf("NATS_MODE: %q must be server-config or operator", c.Mode)
	}
	if c.operator() {
		switch {
		case !nkeys.IsValidPublicAccountKey(c.Account):
			return errors.New("NATS_ACCOUNT: in operator mode it must be the target account's public key (A...): nsc describe account APP --field sub")
		case c.CredsFile == "":
			return errors.New("NATS_CREDS_FILE is required in operator mode: the .creds file of the service's user in the callout account")
		}
	} else if c.TargetSigningKeyFile != "" || c.CalloutAccountJWTFile != "" || c.TargetAccountJWTFile != "" {
		return errors.New("NATS_TARGET_SIGNING_KEY_FILE, NATS_CALLOUT_ACCOUNT_JWT_FILE and NATS_TARGET_ACCOUNT_JWT_FILE apply to operator mode only (set NATS_MODE=operator)")
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
	if t := c.tls(); t != nil {
		if err := t.Check(); err != nil {
			return err
		}
	}
	return c.validatePolicy()
}

// tls is the TLS set-up of the NATS connection, nil unless a NATS_TLS_* setting is given.
func (c config) tls() *callout.TLSFiles {
	if c.TLSCAFile == "" && c.TLSCertFile == "" && c.TLSKeyFile == "" && c.TLSServerName == "" {
		return nil
	}
	return &callout.TLSFiles{CAFile: c.TLSCAFile, CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile, ServerName: c.TLSServerName}
}

// validatePolicy checks DEFAULT_PUB_SUBJECTS, DEFAULT_SUB_SUBJECTS and ANNOTATION_SUBJECT_LIMIT
// one at a time, so that an error names the setting.
func (c config) validatePolicy() error {
	d, none := c.policyDefaults(), []string{}
	for _, s := range []struct {
		name string
		only kube.PolicyDefaults
	}{
		{"DEFAULT_PUB_SUBJECTS", kube.PolicyDefaults{Pub: d.Pub, Sub: none}},
		{"DEFAULT_SUB_SUBJECTS", kube.PolicyDefaults{Pub: none, Sub: d.Sub}},
		{"ANNOTATION_SUBJECT_LIMIT", kube.PolicyDefaults{Pub: none, AnnotationLimit: d.AnnotationLimit}},
	} {
		if err := s.only.Validate(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// policyDefaults are the subjects and the annotation limit of DEFAULT_PUB_SUBJECTS,
// DEFAULT_SUB_SUBJECTS and ANNOTATION_SUBJECT_LIMIT.
func (c config) policyDefaults() kube.PolicyDefaults {
	return kube.PolicyDefaults{Pub: splitList(c.DefaultPub), Sub: splitList(c.DefaultSub), AnnotationLimit: splitList(c.AnnotationLimit)}
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
	client, err := apiHTTPClient(rc)
	if err != nil {
		return "", nil, fmt.Errorf("JWKS_URL: %w", err)
	}
	return jwksURL, client, nil
}

// apiHTTPClient is a plain HTTP client with the Kubernetes client's CA and credentials, for
// the API server's non-resource URLs (JWKS, OIDC discovery).
func apiHTTPClient(rc *rest.Config) (*http.Client, error) {
	rt, err := rest.TransportFor(rc)
	if err != nil {
		return nil, fmt.Errorf("HTTP client from the Kubernetes config: %w", err)
	}
	return &http.Client{Transport: rt, Timeout: 10 * time.Second}, nil
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
	routeKlog(log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	rc, err := kubeConfig(c)
	if err != nil {
		return err
	}
	client, err := metadata.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	if c.Issuer == issuerAuto {
		if c.Issuer, err = discoverIssuer(ctx, rc, log, time.Minute); err != nil {
			return fmt.Errorf("JWT_ISSUER=auto: %w", err)
		}
	}
	jwksURL, httpClient, err := jwksClient(c, rc)
	if err != nil {
		return err
	}
	return serve(ctx, c, deps{client: client, jwksURL: jwksURL, httpClient: httpClient, log: log, reg: reg})
}

// issuerAuto as JWT_ISSUER reads the issuer from the API server's OIDC discovery document.
const issuerAuto = "auto"

// discoverIssuer reads the ServiceAccount token issuer from the API server's OIDC discovery
// document (/.well-known/openid-configuration; the ClusterRole
// system:service-account-issuer-discovery allows it), so that one setting works on every
// cluster. The API server may not answer yet when the pod starts: failures are retried with
// backoff for up to patience, then start-up stops with the last error.
func discoverIssuer(ctx context.Context, rc *rest.Config, log *slog.Logger, patience time.Duration) (string, error) {
	client, err := apiHTTPClient(rc)
	if err != nil {
		return "", err
	}
	u := strings.TrimSuffix(rc.Host, "/") + "/.well-known/openid-configuration"
	fetch := func() (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		var doc struct {
			Issuer string `json:"issuer"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
			return "", fmt.Errorf("GET %s: not an OIDC discovery document: %w", u, err)
		}
		if parsed, err := url.Parse(doc.Issuer); err != nil || doc.Issuer == "" || parsed.Scheme == "" || parsed.Host == "" {
			return "", fmt.Errorf("GET %s: no usable issuer in it (%q)", u, doc.Issuer)
		}
		return doc.Issuer, nil
	}
	deadline := time.Now().Add(patience)
	wait := 500 * time.Millisecond
	for {
		iss, err := fetch()
		if err == nil {
			log.Info("JWT issuer discovered", "issuer", iss, "from", u)
			return iss, nil
		}
		if time.Now().Add(wait).After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("%w (set JWT_ISSUER to the issuer URL instead)", err)
		}
		log.Warn("JWT issuer discovery failed; retrying", "url", u, "error", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 8*time.Second)
	}
}

// klogRouted makes routeKlog act once per process.
var klogRouted sync.Once

// routeKlog sends client-go's klog output into log (the service's structured log) rather than
// klog's own format. klog's logger is process-wide and must not change while informers log, so
// the first call wins (one service per process; tests run several).
func routeKlog(log *slog.Logger) {
	klogRouted.Do(func() { klog.SetSlogLogger(slog.New(infoAndAbove{log.Handler()})) })
}

// infoAndAbove passes on records at info level or above only: client-go's verbose klog lines
// (V-levels, which map below debug) stay out of the service's log even at LOG_LEVEL=debug.
type infoAndAbove struct{ slog.Handler }

func (h infoAndAbove) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo && h.Handler.Enabled(ctx, l)
}

func (h infoAndAbove) WithAttrs(attrs []slog.Attr) slog.Handler {
	return infoAndAbove{h.Handler.WithAttrs(attrs)}
}

func (h infoAndAbove) WithGroup(name string) slog.Handler {
	return infoAndAbove{h.Handler.WithGroup(name)}
}

// deps are the outside-world parts serve runs against; dev mode supplies its own.
type deps struct {
	client     metadata.Interface
	jwksURL    string
	httpClient *http.Client
	log        *slog.Logger
	reg        *prometheus.Registry
	// listener, if set, is used instead of listening on HTTPAddr.
	listener net.Listener
	// started, if set, is called once every component is running.
	started func()
	// watch, if set, registers more files with serve's file watcher before anything starts
	// (dev mode's ServiceAccount manifest), so that they reload as the credentials do.
	watch func(*reload.Watcher) error
}

// serve wires the components and runs them until ctx is done.
func serve(ctx context.Context, c config, d deps) error {
	log, reg := d.log, d.reg
	promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Name: "nats_callout_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "commit", "goversion"}).WithLabelValues(version, commit, runtime.Version()).Set(1)
	watcher, err := reload.NewWatcher(log, reg)
	if err != nil {
		return err
	}
	// Set in operator mode before the watcher runs; the reload callbacks re-check through it.
	var opSetup *operatorSetup
	signingKeys, err := reload.Add(watcher, "signing_key", c.SigningKeyFile, callout.ParseSigningKeys, func(k *callout.KeyRing) {
		log.Info("signing keys reloaded", "issuers", k)
		opSetup.recheck()
	})
	if err != nil {
		return fmt.Errorf("NATS_SIGNING_KEY_FILE: %w", err)
	}
	xkey := func() *callout.XKey { return nil }
	if c.XKeyFile != "" {
		f, err := reload.Add(watcher, "xkey", c.XKeyFile, callout.ParseXKey, func(x *callout.XKey) {
			log.Info("xkey reloaded", "xkey", x)
			opSetup.recheck()
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
			opSetup.recheck()
		})
		if err != nil {
			return fmt.Errorf("NATS_CREDS_FILE: %w", err)
		}
		creds = f.Current
	}
	if d.watch != nil {
		if err := d.watch(watcher); err != nil {
			return err
		}
	}

	store, err := kube.NewStore(d.client, kube.StoreConfig{
		Namespaces: splitList(c.Namespaces), Defaults: c.policyDefaults(), Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("WATCH_NAMESPACES or DEFAULT_*_SUBJECTS: %w", err)
	}

	g, ctx := errgroup.WithContext(ctx)
	verifier, err := kube.NewVerifier(ctx, kube.VerifierConfig{
		JWKSURL: d.jwksURL, HTTPClient: d.httpClient, Issuer: c.Issuer, Audience: c.Audience,
		RefreshInterval: c.JWKSRefresh, Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("JWKS_URL: %w", err)
	}

	var operator *callout.OperatorConfig
	if c.operator() {
		if operator, opSetup, err = operatorMode(c, watcher, log, signingKeys, creds, xkey); err != nil {
			return err
		}
		opSetup.gauge = promauto.With(reg).NewGauge(prometheus.GaugeOpts{
			Name: "nats_callout_operator_setup_ok",
			Help: "Operator mode: 1 while the mounted creds, keys and account JWTs agree with each other, 0 after a reload made them disagree.",
		})
		opSetup.gauge.Set(1)
	}

	metrics := callout.NewMetrics(reg)
	handler, err := callout.NewHandler(callout.HandlerConfig{
		Verifier: verifier, Policies: store, SigningKeys: signingKeys.Current, XKey: xkey,
		Account: c.Account, MaxTTL: c.MaxTTL, Logger: log, Metrics: metrics, Operator: operator,
	})
	if err != nil {
		return err
	}
	svc, err = callout.NewService(callout.ServiceConfig{
		URL: c.NATSURL, Credentials: creds, UseJWT: c.operator(), TLS: c.tls(), Handler: handler, Workers: c.Workers,
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
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready(w, checks, handler, opSetup.Err())
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln := d.listener
	if ln == nil {
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", c.HTTPAddr); err != nil {
			return fmt.Errorf("HTTP_ADDR: %w", err)
		}
	}

	log.Info("starting", "version", version, "commit", commit, "nats_url", callout.RedactURL(c.NATSURL), "account", c.Account,
		"issuers", signingKeys.Current(), "jwks_url", d.jwksURL, "jwt_issuer", c.Issuer, "audience", c.Audience,
		"http_addr", ln.Addr().String(), "encrypted", c.XKeyFile != "", "tls", c.tls() != nil)

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

// operatorMode loads the target account's signing key and the account JWTs and cross-checks
// the operator-mode files at start-up, so a wrong key or a scoped signing key stops the service
// with an explanation instead of failing every client later. The account JWT files reload like
// the key files; after any reload the returned setup check runs again (see recheck), because a
// rotation changes several files that must agree.
func operatorMode(c config, w *reload.Watcher, log *slog.Logger, signingKeys *reload.File[*callout.KeyRing],
	creds func() *callout.Credentials, xkey func() *callout.XKey) (*callout.OperatorConfig, *operatorSetup, error) {
	o := &operatorSetup{log: log}
	targetKeys := signingKeys.Current
	if c.TargetSigningKeyFile != "" && c.TargetSigningKeyFile != c.SigningKeyFile {
		f, err := reload.Add(w, "target_signing_key", c.TargetSigningKeyFile, callout.ParseSigningKeys, func(k *callout.KeyRing) {
			log.Info("target account signing keys reloaded", "keys", k)
			o.recheck()
		})
		if err != nil {
			return nil, nil, fmt.Errorf("NATS_TARGET_SIGNING_KEY_FILE: %w", err)
		}
		targetKeys = f.Current
	}
	accountJWT := func(name, path, setting string) (func() *jwt.AccountClaims, error) {
		if path == "" {
			return func() *jwt.AccountClaims { return nil }, nil
		}
		f, err := reload.Add(w, name, path, callout.ParseAccountJWT, func(ac *jwt.AccountClaims) {
			log.Info("account JWT reloaded", "file", name, "account", ac.Subject, "signing_keys", len(ac.SigningKeys))
			o.recheck()
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", setting, err)
		}
		return f.Current, nil
	}
	calloutJWT, err := accountJWT("callout_account_jwt", c.CalloutAccountJWTFile, "NATS_CALLOUT_ACCOUNT_JWT_FILE")
	if err != nil {
		return nil, nil, err
	}
	targetJWT, err := accountJWT("target_account_jwt", c.TargetAccountJWTFile, "NATS_TARGET_ACCOUNT_JWT_FILE")
	if err != nil {
		return nil, nil, err
	}
	o.current = func() callout.OperatorSetup {
		return callout.OperatorSetup{
			Credentials: creds(), SigningKeys: signingKeys.Current(), TargetAccount: c.Account,
			TargetKeys: targetKeys(), XKey: xkey(), CalloutAccountJWT: calloutJWT(), TargetAccountJWT: targetJWT(),
		}
	}
	if err := callout.CheckOperatorSetup(o.current()); err != nil {
		return nil, nil, err
	}
	return &callout.OperatorConfig{
		CalloutAccount: func() string { return creds().Account() },
		TargetKeys:     targetKeys,
	}, o, nil
}

// operatorSetup re-runs the operator-mode start-up check after a reload. A mismatch found then
// does not stop the service or reject the file (during a rotation the Secret and the ConfigMap
// reach the pod at different moments), but it is logged as an error, shown on /readyz and in
// nats_callout_operator_setup_ok until the files agree again.
type operatorSetup struct {
	log     *slog.Logger
	current func() callout.OperatorSetup
	gauge   prometheus.Gauge
	mu      sync.Mutex
	err     error
}

// recheck runs the check on the files now in use. Safe to call before current is set.
func (o *operatorSetup) recheck() {
	if o == nil || o.current == nil {
		return
	}
	err := callout.CheckOperatorSetup(o.current())
	o.mu.Lock()
	prev := o.err
	o.err = err
	o.mu.Unlock()
	if o.gauge != nil {
		ok := 0.0
		if err == nil {
			ok = 1
		}
		o.gauge.Set(ok)
	}
	switch {
	case err != nil:
		o.log.Error("operator-mode files disagree after a reload; logins may be refused until they agree again", "error", err)
	case prev != nil:
		o.log.Info("operator-mode files agree again")
	}
}

// Err is the result of the last check.
func (o *operatorSetup) Err() error {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

type check struct {
	name string
	fn   func() error
}

// ready writes one line per readiness condition and answers 503 if any fails.
func ready(w http.ResponseWriter, checks []check, h *callout.Handler, setupErr error) {
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
	if setupErr != nil {
		fmt.Fprintf(&b, "[!] operator_setup: %v\n", setupErr)
	}
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = io.WriteString(w, b.String())
}

// devConfig is every setting of the dev command. Dev mode reads no environment variables, so
// that it behaves the same on every machine.
type devConfig struct {
	Manifest   string
	Kubeconfig string
	Namespaces string
	Port       int
	HTTPAddr   string
	Dir        string
	XKey       bool
	Check      bool
	TokenTTL   time.Duration
	LogLevel   string
	LogFormat  string
}

const (
	defaultDevManifest = "examples/serviceaccounts.yaml"
	// devTargetAccount is the account dev mode places workloads in.
	devTargetAccount = "APP"
	// devAudience is the audience dev tokens carry and the service expects, as in production.
	devAudience = "nats"
	// devReadyTimeout bounds the wait for /readyz; a real cluster's informer may take a while.
	devReadyTimeout = time.Minute
	// devStepTimeout bounds one --check step.
	devStepTimeout = 3 * time.Second
)

func parseDevConfig(args []string, output io.Writer) (devConfig, error) {
	var c devConfig
	fs := flag.NewFlagSet("nats-k8s-oidc-callout dev", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprint(output, "Usage: nats-k8s-oidc-callout dev [flags]\n\n"+
			"Runs the callout service against an embedded nats-server on 127.0.0.1, with a local token issuer\n"+
			"and the ServiceAccounts of a manifest (or of a real cluster with --kubeconfig), and prints\n"+
			"commands to try it. --check runs the same scenario as a self-test.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Manifest, "manifest", defaultDevManifest, "ServiceAccounts to serve (YAML); edits apply to the next connection")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "use the ServiceAccounts of this cluster instead of a manifest; tokens are still minted locally, with their real uids, for those listed at start and at each token refresh")
	fs.StringVar(&c.Namespaces, "namespaces", "", "with --kubeconfig: comma-separated namespaces to serve (default: the kubeconfig context's)")
	fs.IntVar(&c.Port, "port", 4222, "NATS port on 127.0.0.1; a busy port falls back to a free one; 0 picks a free one")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "address for /healthz, /readyz and /metrics; a busy port falls back to a free one")
	fs.StringVar(&c.Dir, "dir", "", "directory for tokens, keys and the server config (default: a new temporary directory, removed on exit)")
	fs.BoolVar(&c.XKey, "xkey", true, "encrypt callout requests and responses with an xkey, as production should")
	fs.BoolVar(&c.Check, "check", false, "run the scenario as a self-test with nats.go clients, print PASS/FAIL per step and exit")
	fs.DurationVar(&c.TokenTTL, "token-ttl", time.Hour, "lifetime of the minted tokens; they are re-minted at 80% of it, as the kubelet does")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "json or text")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.Check && !set["port"] {
		c.Port = 0 // a self-test must not depend on, or clash with, a running dev instance
	}
	if c.Check && !set["http-addr"] {
		c.HTTPAddr = "127.0.0.1:0"
	}
	switch {
	case c.Kubeconfig != "" && set["manifest"]:
		return c, errors.New("--manifest and --kubeconfig exclude each other: ServiceAccounts come from one or the other")
	case c.Namespaces != "" && c.Kubeconfig == "":
		return c, errors.New("--namespaces needs --kubeconfig; a manifest names its own namespaces")
	case c.Port < 0 || c.Port > 65535:
		return c, fmt.Errorf("--port: %d is not a port number", c.Port)
	case c.TokenTTL < 10*time.Minute:
		return c, fmt.Errorf("--token-ttl: %s is too short (minimum 10m; Kubernetes' own minimum)", c.TokenTTL)
	case c.LogFormat != "json" && c.LogFormat != "text":
		return c, fmt.Errorf("--log-format: %q must be json or text", c.LogFormat)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return c, fmt.Errorf("--http-addr: %q is not host:port (e.g. 127.0.0.1:8080)", c.HTTPAddr)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return c, fmt.Errorf("--log-level: %q must be debug, info, warn or error", c.LogLevel)
	}
	return c, nil
}

// runDev runs the service as production does, with embedded stand-ins only where a cluster
// would be: nats-server, the token issuer and its JWKS, and (without --kubeconfig) the API server.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	dc, err := parseDevConfig(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := newLogger(stderr, dc.LogLevel, dc.LogFormat)
	routeKlog(log)
	dir := dc.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "nats-callout-dev-"); err != nil {
			return fmt.Errorf("dev: temporary directory: %w", err)
		}
		defer func() {
			if rmErr := os.RemoveAll(dir); rmErr != nil && err == nil {
				err = fmt.Errorf("dev: remove %s: %w", dir, rmErr)
			}
		}()
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}

	keys, err := newDevKeys(dir, dc.XKey)
	if err != nil {
		return err
	}
	natsSrv, busy, err := startDevNATS(dir, dc.Port, keys)
	if err != nil {
		return err
	}
	defer natsSrv.WaitForShutdown()
	defer natsSrv.Shutdown()
	if busy {
		fmt.Fprintf(stdout, "Port %d is busy: nats-server listens on %s instead.\n", dc.Port, natsSrv.ClientURL())
	}

	// The token issuer stands in for the API server: it signs the tokens and serves its JWKS
	// (and OIDC discovery) on loopback, where the verifier fetches it as it would in a cluster.
	jwksLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("dev: JWKS listener: %w", err)
	}
	defer jwksLn.Close() // a no-op once the server has closed it
	issuerURL := "http://" + jwksLn.Addr().String()
	issuer, err := kubefake.NewTokenIssuer(issuerURL)
	if err != nil {
		return err
	}
	jwksSrv := &http.Server{Handler: issuerHandler(issuer), ReadHeaderTimeout: 5 * time.Second}

	httpLn, httpBusy, err := listenFallback(dc.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	defer httpLn.Close() // a no-op once serve has closed it
	if httpBusy {
		fmt.Fprintf(stdout, "Address %s is busy: HTTP listens on %s instead.\n", dc.HTTPAddr, httpLn.Addr())
	}

	serveArgs := []string{
		"--nats-url", natsSrv.ClientURL(),
		"--nats-creds-file", keys.serviceFile,
		"--nats-signing-key-file", keys.issuerFile,
		"--nats-account", devTargetAccount,
		"--k8s-in-cluster=false",
		"--jwks-url", issuerURL + "/openid/v1/jwks",
		"--jwt-issuer", issuerURL,
		"--jwt-audience", devAudience,
		"--log-level", dc.LogLevel,
		"--log-format", dc.LogFormat,
		"--http-addr", httpLn.Addr().String(),
	}
	if dc.XKey {
		serveArgs = append(serveArgs, "--nats-xkey-file", keys.xkeyFile)
	}
	var client metadata.Interface
	var cluster *kubefake.MemoryCluster
	if dc.Kubeconfig != "" {
		rc, namespaces, err := devCluster(dc)
		if err != nil {
			return err
		}
		if client, err = metadata.NewForConfig(rc); err != nil {
			return fmt.Errorf("--kubeconfig: kubernetes client: %w", err)
		}
		dc.Namespaces = strings.Join(namespaces, ",")
		serveArgs = append(serveArgs, "--watch-namespaces", dc.Namespaces)
	} else {
		if cluster, err = kubefake.NewMemoryCluster(); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		defer cluster.Close()
		client = cluster.Client()
	}
	c, err := parseConfig(serveArgs, func(string) (string, bool) { return "", false }, stderr)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defaults := c.policyDefaults()
	tokens := &devTokens{issuer: issuer, dir: filepath.Join(dir, "tokens"), audience: devAudience, ttl: dc.TokenTTL, log: log}

	d := deps{
		client: client, jwksURL: c.JWKSURL, httpClient: &http.Client{Timeout: 10 * time.Second},
		log: log, reg: prometheus.NewRegistry(), listener: httpLn,
	}
	var list func(context.Context) ([]kube.ServiceAccount, error)
	if dc.Kubeconfig != "" {
		list = func(ctx context.Context) ([]kube.ServiceAccount, error) {
			return listServiceAccounts(ctx, client, splitList(dc.Namespaces))
		}
		sas, err := list(ctx)
		if err == nil {
			err = tokens.set(sas)
		}
		if err != nil {
			return fmt.Errorf("--kubeconfig: %w", err)
		}
	} else {
		d.watch = func(w *reload.Watcher) error {
			apply := func(sas []kube.ServiceAccount) error {
				res, err := kubefake.SyncServiceAccounts(ctx, cluster, sas)
				if err != nil {
					return err
				}
				log.Info("manifest applied", "path", dc.Manifest, "serviceaccounts", len(res.ServiceAccounts),
					"created", res.Created, "updated", res.Updated, "deleted", res.Deleted)
				logPolicies(log, defaults, res.ServiceAccounts)
				return tokens.set(res.ServiceAccounts)
			}
			f, err := reload.Add(w, "manifest", dc.Manifest, kube.ParseServiceAccounts, func(sas []kube.ServiceAccount) {
				if err := apply(sas); err != nil {
					log.Error("manifest not applied", "path", dc.Manifest, "error", err)
				}
			})
			if errors.Is(err, fs.ErrNotExist) && dc.Manifest == defaultDevManifest {
				return fmt.Errorf("--manifest: %s not found: run from the repository root or pass --manifest FILE: %w", dc.Manifest, err)
			}
			if err != nil {
				return fmt.Errorf("--manifest: %w", err)
			}
			if err := apply(f.Current()); err != nil {
				return fmt.Errorf("--manifest: %w", err)
			}
			return nil
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve(gctx, c, d) })
	g.Go(func() error {
		if err := jwksSrv.Serve(jwksLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("dev: JWKS server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, stop := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
		defer stop()
		return jwksSrv.Shutdown(sctx)
	})
	g.Go(func() error { return tokens.run(gctx, list) })
	g.Go(func() error {
		if err := waitReady(gctx, "http://"+httpLn.Addr().String()+"/readyz"); err != nil {
			return err
		}
		if gctx.Err() != nil {
			if dc.Check && ctx.Err() != nil {
				return errors.New("dev --check: interrupted")
			}
			return nil // another component failed and says why, or dev is stopping
		}
		sc := devScenario{
			url: natsSrv.ClientURL(), http: "http://" + httpLn.Addr().String(),
			conf: filepath.Join(dir, "nats.conf"), manifest: dc.Manifest, kubeconfig: dc.Kubeconfig,
			namespaces: dc.Namespaces, encrypted: dc.XKey, tokens: tokens,
		}
		sc.plan, sc.planErr = planDemo(devAccounts(tokens.current(), defaults))
		if !dc.Check {
			// Show it working before anything else: the allowed and the refused publish,
			// run now with nats.go, above the commands to try by hand.
			var shown strings.Builder
			sc.check(gctx, &shown, issuerURL, true)
			sc.demo = shown.String()
			sc.print(stdout)
			return nil
		}
		failed := sc.check(gctx, stdout, issuerURL, false)
		cancel()
		if failed > 0 {
			return fmt.Errorf("dev --check: %d step(s) failed", failed)
		}
		return nil
	})
	return g.Wait()
}

// devKeys are the files holding the keys dev mode generates; their seeds are never printed.
type devKeys struct {
	serviceFile, issuerFile, xkeyFile string
	config                            installer.ServerConfig
}

// newDevKeys generates the service user, the issuer account and (if xkey) the curve key, and
// writes their seeds to dir with mode 0600, where serve reads them as it reads mounted Secrets.
func newDevKeys(dir string, xkey bool) (devKeys, error) {
	var k devKeys
	type gen struct {
		create func() (nkeys.KeyPair, error)
		file   *string
		public *string
		name   string
	}
	gens := []gen{
		{nkeys.CreateUser, &k.serviceFile, &k.config.ServiceUser, "service.nk"},
		{nkeys.CreateAccount, &k.issuerFile, &k.config.Issuer, "issuer.nk"},
	}
	if xkey {
		gens = append(gens, gen{nkeys.CreateCurveKeys, &k.xkeyFile, &k.config.XKey, "xkey.nk"})
	}
	for _, g := range gens {
		kp, err := g.create()
		if err != nil {
			return k, fmt.Errorf("dev: generate %s: %w", g.name, err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return k, fmt.Errorf("dev: %s: %w", g.name, err)
		}
		if *g.public, err = kp.PublicKey(); err != nil {
			return k, fmt.Errorf("dev: %s: %w", g.name, err)
		}
		*g.file = filepath.Join(dir, g.name)
		if err := atomicfile.WriteFile(*g.file, append(seed, '\n'), 0o600); err != nil {
			return k, fmt.Errorf("dev: %w", err)
		}
	}
	return k, nil
}

// startDevNATS writes dir/nats.conf (the callout config a user would write, on 127.0.0.1:port)
// and starts an embedded nats-server from it. A busy port is replaced by a free one (busy=true).
func startDevNATS(dir string, port int, keys devKeys) (*server.Server, bool, error) {
	port, busy, err := pickPort(port)
	if err != nil {
		return nil, false, err
	}
	block, err := keys.config.NATSConfig()
	if err != nil {
		return nil, false, fmt.Errorf("dev: server config: %w", err)
	}
	conf := fmt.Sprintf("# nats-server config of `nats-k8s-oidc-callout dev`: every client login goes to the callout.\nlisten: \"127.0.0.1:%d\"\n%s", port, block)
	path := filepath.Join(dir, "nats.conf")
	if err := atomicfile.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, false, fmt.Errorf("dev: %w", err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, false, fmt.Errorf("dev: server config %s: %w", path, err)
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, false, fmt.Errorf("dev: nats-server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, false, fmt.Errorf("dev: nats-server did not start listening on 127.0.0.1:%d", port)
	}
	return s, busy, nil
}

// pickPort returns port if 127.0.0.1:port is free, else (or when port is 0) a free port.
func pickPort(port int) (int, bool, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	busy := err != nil
	if busy {
		if ln, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0"); err != nil {
			return 0, false, fmt.Errorf("dev: no free port on 127.0.0.1: %w", err)
		}
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, busy && port != 0, nil
}

// listenFallback listens on addr, or on a free port of the same host when addr is busy.
func listenFallback(addr string) (net.Listener, bool, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err == nil {
		return ln, false, nil
	}
	host, _, _ := net.SplitHostPort(addr)
	ln, err2 := lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, "0"))
	if err2 != nil {
		return nil, false, fmt.Errorf("%w (and no free port on %s: %w)", err, host, err2)
	}
	return ln, true, nil
}

// issuerHandler serves the token issuer's JWKS where the API server serves it, and an OIDC
// discovery document pointing at it.
func issuerHandler(t *kubefake.TokenIssuer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/openid/v1/jwks", t.JWKSHandler())
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q,"response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}`,
			t.Issuer(), t.Issuer()+"/openid/v1/jwks")
	})
	return mux
}

// devCluster returns the client config of --kubeconfig and the namespaces to serve.
func devCluster(dc devConfig) (*rest.Config, []string, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: dc.Kubeconfig}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	namespaces := splitList(dc.Namespaces)
	if len(namespaces) == 0 {
		ns, _, err := cc.Namespace()
		if err != nil {
			return nil, nil, fmt.Errorf("--kubeconfig: namespace: %w", err)
		}
		namespaces = []string{ns}
	}
	return rc, namespaces, nil
}

// listServiceAccounts lists the ServiceAccounts of the namespaces, in namespace order.
func listServiceAccounts(ctx context.Context, client metadata.Interface, namespaces []string) ([]kube.ServiceAccount, error) {
	var out []kube.ServiceAccount
	for _, ns := range namespaces {
		l, err := client.Resource(kube.ServiceAccountsResource).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list serviceaccounts in %s: %w", ns, err)
		}
		out = append(out, l.Items...)
	}
	return out, nil
}

// logPolicies reports, for each ServiceAccount, what its annotations grant, and warns about
// entries that were dropped or that make it refused: dev mode is where annotations get written.
func logPolicies(log *slog.Logger, defaults kube.PolicyDefaults, sas []kube.ServiceAccount) {
	for _, sa := range sas {
		p, err := kube.ParsePolicy(defaults, sa.Namespace, sa.Name, sa.Annotations)
		if err != nil {
			log.Warn("serviceaccount will be refused", "namespace", sa.Namespace, "serviceaccount", sa.Name, "error", err)
			continue
		}
		for _, w := range p.Warnings {
			log.Warn("serviceaccount annotation", "namespace", sa.Namespace, "serviceaccount", sa.Name, "warning", w)
		}
		log.Debug("serviceaccount permissions", "namespace", sa.Namespace, "serviceaccount", sa.Name,
			"pub_allow", p.Permissions.PubAllow, "pub_deny", p.Permissions.PubDeny,
			"sub_allow", p.Permissions.SubAllow, "sub_deny", p.Permissions.SubDeny, "responses", p.Permissions.AllowResponses)
	}
}

// waitReady polls the service's /readyz until it answers 200.
func waitReady(ctx context.Context, url string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(devReadyTimeout)
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
			return fmt.Errorf("dev: the service did not become ready within %s:\n%s", devReadyTimeout, last)
		}
		select {
		case <-ctx.Done():
			return nil // the caller tells stopping from failing
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// devTokens mints a token for each ServiceAccount into dir/<namespace>/<name>.token, as the
// kubelet writes projected tokens, and re-mints them at 80% of their lifetime.
type devTokens struct {
	issuer   *kubefake.TokenIssuer
	dir      string
	audience string
	ttl      time.Duration
	log      *slog.Logger

	mu       sync.Mutex
	accounts []kube.ServiceAccount
}

// path is where the token of namespace/name is written.
func (t *devTokens) path(namespace, name string) string {
	return filepath.Join(t.dir, namespace, name+".token")
}

// set mints tokens for sas and remembers them for refreshes. The files of ServiceAccounts that
// are gone stay: their tokens are now refused, which is worth trying.
func (t *devTokens) set(sas []kube.ServiceAccount) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, sa := range sas {
		tok, err := t.issuer.ServiceAccountToken(sa.Namespace, sa.Name, string(sa.UID), []string{t.audience}, t.ttl)
		if err != nil {
			return fmt.Errorf("token for %s/%s: %w", sa.Namespace, sa.Name, err)
		}
		p := t.path(sa.Namespace, sa.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(p, []byte(tok), 0o600); err != nil {
			return err
		}
	}
	t.accounts = slices.Clone(sas)
	return nil
}

// current returns the ServiceAccounts tokens were last minted for.
func (t *devTokens) current() []kube.ServiceAccount {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.accounts)
}

// run re-mints the tokens until ctx is done; list, if set, re-reads the ServiceAccounts first.
func (t *devTokens) run(ctx context.Context, list func(context.Context) ([]kube.ServiceAccount, error)) error {
	tick := time.NewTicker(t.ttl * 8 / 10)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		sas := t.current()
		if list != nil {
			l, err := list(ctx)
			if err != nil {
				t.log.Error("tokens not refreshed", "error", err)
				continue
			}
			sas = l
		}
		if err := t.set(sas); err != nil {
			t.log.Error("tokens not refreshed", "error", err)
			continue
		}
		t.log.Info("tokens refreshed", "dir", t.dir, "serviceaccounts", len(sas))
	}
}

// devAccount is a ServiceAccount with the permissions it gets.
type devAccount struct {
	Namespace, Name string
	Perms           kube.Permissions
}

func (a devAccount) String() string { return a.Namespace + "/" + a.Name }

// devAccounts parses the policy of each ServiceAccount; refused ones are left out.
func devAccounts(sas []kube.ServiceAccount, defaults kube.PolicyDefaults) []devAccount {
	var out []devAccount
	for _, sa := range sas {
		p, err := kube.ParsePolicy(defaults, sa.Namespace, sa.Name, sa.Annotations)
		if err != nil {
			continue
		}
		out = append(out, devAccount{Namespace: sa.Namespace, Name: sa.Name, Perms: p.Permissions})
	}
	return out
}

// demo is the scenario dev mode prints and --check runs, chosen from the ServiceAccounts.
type demo struct {
	// Publisher may publish Subject; Responder may subscribe to it and answer requests.
	Publisher, Responder devAccount
	Subject              string
	// Refused is a subject Publisher may not publish to; "" if it may publish everywhere.
	Refused string
	// InboxRefused says Publisher may not subscribe to the shared _INBOX.> replies.
	InboxRefused bool
}

// planDemo picks the scenario: the first ServiceAccount that may publish a subject another
// ServiceAccount answers on (one in another namespace preferred, then another one in the same
// namespace, then itself), and a subject it may not publish, taken from what the others may use.
func planDemo(accounts []devAccount) (demo, error) {
	for _, a := range accounts {
		best, bestScore := demo{}, 0
		for _, pat := range a.Perms.PubAllow {
			s := concreteSubject(pat)
			if strings.HasPrefix(s, "_INBOX") || !a.Perms.AllowsPublish(s) {
				continue
			}
			for _, b := range accounts {
				if !b.Perms.AllowResponses || !b.Perms.AllowsSubscribe(s) {
					continue
				}
				score := 1
				switch {
				case b.Namespace != a.Namespace:
					score = 3
				case b.Name != a.Name:
					score = 2
				}
				if score > bestScore {
					best, bestScore = demo{Publisher: a, Responder: b, Subject: s}, score
				}
			}
		}
		if bestScore == 0 {
			continue
		}
		var candidates []string
		for _, o := range accounts {
			if o.String() != a.String() {
				candidates = append(candidates, o.Perms.PubAllow...)
				candidates = append(candidates, o.Perms.SubAllow...)
			}
		}
		candidates = append(candidates, a.Perms.PubDeny...)
		candidates = append(candidates, "demo.refused")
		for _, pat := range candidates {
			if s := concreteSubject(pat); !strings.HasPrefix(s, "_INBOX") && !a.Perms.AllowsPublish(s) {
				best.Refused = s
				break
			}
		}
		best.InboxRefused = !a.Perms.AllowsSubscribe("_INBOX.demo.demo")
		return best, nil
	}
	return demo{}, errors.New("no ServiceAccount may publish to a subject that a ServiceAccount allowed to respond may subscribe to")
}

// concreteSubject turns a permission subject into one a client can publish to.
func concreteSubject(pattern string) string {
	tokens := strings.Split(pattern, ".")
	for i, t := range tokens {
		if t == "*" || t == ">" {
			tokens[i] = "demo"
		}
	}
	return strings.Join(tokens, ".")
}

// devScenario is what dev mode prints and checks.
type devScenario struct {
	url, http, conf, manifest, kubeconfig, namespaces string
	encrypted                                         bool
	tokens                                            *devTokens
	plan                                              demo
	planErr                                           error
	// demo holds the PASS/FAIL lines of the quick check run at start, printed with the rest.
	demo string
}

func (sc devScenario) tokenFile(a devAccount) string { return sc.tokens.path(a.Namespace, a.Name) }

// print writes the ready-to-paste instructions.
func (sc devScenario) print(w io.Writer) {
	enc := "plain callouts (--xkey=false)"
	if sc.encrypted {
		enc = "encrypted callouts (xkey)"
	}
	fmt.Fprintf(w, "\nnats-k8s-oidc-callout dev: nats-server with auth callout, answered by this service.\n\n")
	fmt.Fprintf(w, "  NATS URL       %s\n", sc.url)
	fmt.Fprintf(w, "  HTTP           %s/readyz  %[1]s/metrics\n", sc.http)
	fmt.Fprintf(w, "  server config  %s  (%s)\n", sc.conf, enc)
	if sc.kubeconfig != "" {
		fmt.Fprintf(w, "  cluster        %s, namespaces %s: ServiceAccounts come from the cluster,\n"+
			"                 tokens from the local issuer (with their real uids); annotations changed with\n"+
			"                 kubectl apply to the next connection; restart to get tokens for new ServiceAccounts\n", sc.kubeconfig, sc.namespaces)
	} else {
		fmt.Fprintf(w, "  manifest       %s  (edit it: the next connection gets the new permissions)\n", sc.manifest)
	}
	fmt.Fprintf(w, "\nServiceAccount tokens (audience %q, re-minted before they expire):\n", devAudience)
	for _, sa := range sc.tokens.current() {
		fmt.Fprintf(w, "  %-28s %s\n", sa.Namespace+"/"+sa.Name, sc.tokens.path(sa.Namespace, sa.Name))
	}
	if sc.planErr != nil {
		fmt.Fprintf(w, "\nNo demo commands: %v.\nConnect with any token above: nats -s %s --token \"$(cat FILE)\" pub SUBJECT hello\n", sc.planErr, sc.url)
		return
	}
	p := sc.plan
	pubTok := fmt.Sprintf(`--token "$(cat %s)"`, shellQuote(sc.tokenFile(p.Publisher)))
	respTok := fmt.Sprintf(`--token "$(cat %s)"`, shellQuote(sc.tokenFile(p.Responder)))
	inbox := kube.InboxPrefix(p.Publisher.Namespace, p.Publisher.Name)
	fmt.Fprintf(w, "\nTry it with the NATS CLI (go install github.com/nats-io/natscli/nats@v0.5.0):\n\n")
	fmt.Fprintf(w, "  # allowed: %s may publish %s\n", p.Publisher, p.Subject)
	fmt.Fprintf(w, "  nats -s %s %s pub %s hello\n\n", sc.url, pubTok, p.Subject)
	if p.Refused != "" {
		fmt.Fprintf(w, "  # refused: %s may not publish %s (nats: Permissions Violation)\n", p.Publisher, p.Refused)
		fmt.Fprintf(w, "  nats -s %s %s pub %s hello\n\n", sc.url, pubTok, p.Refused)
	}
	fmt.Fprintf(w, "  # refused: not a token of the cluster's issuer (nats: Authorization Violation)\n")
	fmt.Fprintf(w, "  nats -s %s --token not-a-serviceaccount-token pub %s hello\n\n", sc.url, p.Subject)
	fmt.Fprintf(w, "  # request/reply: %s answers (leave it running) ...\n", p.Responder)
	fmt.Fprintf(w, "  nats -s %s %s reply %s 'answered by %s'\n", sc.url, respTok, p.Subject, p.Responder)
	fmt.Fprintf(w, "  # ... and %s asks from another terminal, with its private inbox prefix\n", p.Publisher)
	fmt.Fprintf(w, "  nats -s %s %s --inbox-prefix %s req %s hello\n", sc.url, pubTok, inbox, p.Subject)
	if p.InboxRefused {
		fmt.Fprintf(w, "  # without --inbox-prefix the reply subscription on _INBOX.> is refused: replies are private\n")
	}
	fmt.Fprintf(w, "\nOr once per shell: export NATS_URL=%s NATS_TOKEN=\"$(cat %s)\"; then: nats pub %s hello\n",
		sc.url, shellQuote(sc.tokenFile(p.Publisher)), p.Subject)
	fmt.Fprintf(w, "\nFrom Go (nats.go):\n\n")
	fmt.Fprintf(w, "  nc, err := nats.Connect(%q,\n", sc.url)
	fmt.Fprintf(w, "      // read the token at every (re)connect: it is re-minted before it expires\n")
	fmt.Fprintf(w, "      nats.TokenHandler(func() string {\n")
	fmt.Fprintf(w, "          b, _ := os.ReadFile(%q)\n", sc.tokenFile(p.Publisher))
	fmt.Fprintf(w, "          return strings.TrimSpace(string(b))\n")
	fmt.Fprintf(w, "      }),\n")
	fmt.Fprintf(w, "      nats.CustomInboxPrefix(%q), // the only inbox it may subscribe to\n", inbox)
	fmt.Fprintf(w, "      nats.MaxReconnects(-1), nats.IgnoreAuthErrorAbort(), // keep retrying while no callout answers\n")
	fmt.Fprintf(w, "  )\n")
	if sc.demo != "" {
		fmt.Fprintf(w, "\nJust now, with nats.go (make check runs the whole self-test):\n\n")
		for line := range strings.Lines(sc.demo) {
			fmt.Fprintf(w, "  %s", line)
		}
	}
	fmt.Fprintf(w, "\nDecisions are logged to stderr. Ctrl-C stops.\n\n")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		safe := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:,@%=", r)
		return !safe
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// check runs the scenario with nats.go clients against the embedded server and writes one
// PASS, FAIL or SKIP line per step. It returns the number of failed steps. quick runs only the
// allowed and the refused publish (what dev shows at start).
func (sc devScenario) check(ctx context.Context, w io.Writer, issuerURL string, quick bool) int {
	type step struct {
		name string
		// skip, if set, says why the ServiceAccounts give this step nothing to test.
		skip string
		run  func(ctx context.Context) (string, error)
	}
	var steps []step
	if sc.planErr != nil {
		steps = append(steps, step{"scenario", "", func(context.Context) (string, error) { return "", sc.planErr }})
	} else {
		p := sc.plan
		steps = append(steps,
			step{"allowed publish delivered", "", sc.checkDelivered},
			step{"refused publish", skipIf(p.Refused == "", p.Publisher.String()+" may publish everywhere"), sc.checkRefusedPublish},
		)
	}
	if sc.planErr == nil && !quick {
		p := sc.plan
		steps = append(steps,
			step{"refused token: garbage", "", func(context.Context) (string, error) {
				return sc.checkRefusedToken("not-a-serviceaccount-token")
			}},
			step{"refused token: signed by another key", "", func(context.Context) (string, error) {
				other, err := kubefake.NewECDSATokenIssuer(issuerURL)
				if err != nil {
					return "", err
				}
				tok, err := other.ServiceAccountToken(p.Publisher.Namespace, p.Publisher.Name, sc.uid(p.Publisher), []string{devAudience}, time.Hour)
				if err != nil {
					return "", err
				}
				return sc.checkRefusedToken(tok)
			}},
			step{"refused token: unknown serviceaccount", "", func(context.Context) (string, error) {
				tok, err := sc.tokens.issuer.ServiceAccountToken("dev-check", "nobody", "00000000-0000-0000-0000-000000000000", []string{devAudience}, time.Hour)
				if err != nil {
					return "", err
				}
				return sc.checkRefusedToken(tok)
			}},
			step{"request/reply via private inbox", "", sc.checkRequest},
			step{"shared _INBOX refused", skipIf(!p.InboxRefused, p.Publisher.String()+" may subscribe to _INBOX.>"), sc.checkSharedInbox},
		)
	}
	failed := 0
	for _, s := range steps {
		if s.skip != "" {
			fmt.Fprintf(w, "SKIP %s: %s\n", s.name, s.skip)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, devStepTimeout)
		detail, err := s.run(sctx)
		cancel()
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(w, "FAIL %s: %v\n", s.name, err)
		default:
			fmt.Fprintf(w, "PASS %s: %s\n", s.name, detail)
		}
	}
	return failed
}

// skipIf returns why when cond holds, else "".
func skipIf(cond bool, why string) string {
	if cond {
		return why
	}
	return ""
}

func (sc devScenario) uid(a devAccount) string {
	for _, sa := range sc.tokens.current() {
		if sa.Namespace == a.Namespace && sa.Name == a.Name {
			return string(sa.UID)
		}
	}
	return ""
}

// connect dials as a workload whose token is read from its file at every connect, as the
// printed nats.go snippet does; asynchronous errors (permission violations) go to the channel.
func (sc devScenario) connect(a devAccount, customInbox bool) (*nats.Conn, <-chan error, error) {
	file := sc.tokenFile(a)
	errs := make(chan error, 8)
	opts := []nats.Option{
		nats.Name("dev --check as " + a.String()),
		nats.TokenHandler(func() string {
			b, _ := os.ReadFile(file)
			return strings.TrimSpace(string(b))
		}),
		nats.NoReconnect(),
		nats.Timeout(devStepTimeout),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}),
	}
	if customInbox {
		opts = append(opts, nats.CustomInboxPrefix(kube.InboxPrefix(a.Namespace, a.Name)))
	}
	nc, err := nats.Connect(sc.url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect as %s: %w", a, err)
	}
	return nc, errs, nil
}

func (sc devScenario) checkDelivered(ctx context.Context) (string, error) {
	p := sc.plan
	sub, subErrs, err := sc.connect(p.Responder, true)
	if err != nil {
		return "", err
	}
	defer sub.Close()
	msgs, err := sub.SubscribeSync(p.Subject)
	if err != nil {
		return "", err
	}
	if err := sub.FlushWithContext(ctx); err != nil {
		return "", err
	}
	pub, pubErrs, err := sc.connect(p.Publisher, true)
	if err != nil {
		return "", err
	}
	defer pub.Close()
	if err := pub.Publish(p.Subject, []byte("hello from dev --check")); err != nil {
		return "", err
	}
	if err := pub.FlushWithContext(ctx); err != nil {
		return "", err
	}
	if _, err := msgs.NextMsgWithContext(ctx); err != nil {
		select {
		case e := <-pubErrs:
			err = e
		case e := <-subErrs:
			err = e
		default:
		}
		return "", fmt.Errorf("%s published %s, %s received nothing: %w", p.Publisher, p.Subject, p.Responder, err)
	}
	return fmt.Sprintf("%s published %s, %s received it", p.Publisher, p.Subject, p.Responder), nil
}

func (sc devScenario) checkRefusedPublish(ctx context.Context) (string, error) {
	p := sc.plan
	nc, errs, err := sc.connect(p.Publisher, true)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	if err := nc.Publish(p.Refused, []byte("must not arrive")); err != nil {
		return "", err
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return "", err
	}
	return waitViolation(ctx, errs, fmt.Sprintf("Publish to %q", p.Refused))
}

func (sc devScenario) checkRefusedToken(token string) (string, error) {
	nc, err := nats.Connect(sc.url, nats.Token(token), nats.NoReconnect(), nats.Timeout(devStepTimeout))
	if err == nil {
		nc.Close()
		return "", errors.New("the connection was accepted")
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		return "", fmt.Errorf("want an authorization violation, got: %w", err)
	}
	return err.Error(), nil
}

func (sc devScenario) checkRequest(ctx context.Context) (string, error) {
	p := sc.plan
	resp, _, err := sc.connect(p.Responder, true)
	if err != nil {
		return "", err
	}
	defer resp.Close()
	answer := "answered by " + p.Responder.String()
	if _, err := resp.Subscribe(p.Subject, func(m *nats.Msg) { _ = m.Respond([]byte(answer)) }); err != nil {
		return "", err
	}
	if err := resp.FlushWithContext(ctx); err != nil {
		return "", err
	}
	req, errs, err := sc.connect(p.Publisher, true)
	if err != nil {
		return "", err
	}
	defer req.Close()
	msg, err := req.RequestWithContext(ctx, p.Subject, []byte("hello"))
	if err != nil {
		select {
		case e := <-errs:
			err = fmt.Errorf("%w (%w)", err, e)
		default:
		}
		return "", fmt.Errorf("%s asked on %s with inbox %s: %w", p.Publisher, p.Subject, kube.InboxPrefix(p.Publisher.Namespace, p.Publisher.Name), err)
	}
	if string(msg.Data) != answer {
		return "", fmt.Errorf("reply %q, want %q", msg.Data, answer)
	}
	return fmt.Sprintf("%s asked on %s, %s answered to %s.*", p.Publisher, p.Subject, p.Responder, kube.InboxPrefix(p.Publisher.Namespace, p.Publisher.Name)), nil
}

func (sc devScenario) checkSharedInbox(ctx context.Context) (string, error) {
	p := sc.plan
	nc, errs, err := sc.connect(p.Publisher, false)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	// The request itself cannot succeed; the check is that subscribing to the shared inbox
	// is refused, which arrives asynchronously.
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = nc.RequestWithContext(rctx, p.Subject, []byte("hello")) })
	detail, err := waitViolation(ctx, errs, `Subscription to "_INBOX.`)
	cancel()
	wg.Wait()
	return detail, err
}

// waitViolation waits for a permissions violation whose text contains what.
func waitViolation(ctx context.Context, errs <-chan error, what string) (string, error) {
	select {
	case err := <-errs:
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), what) {
			return err.Error(), nil
		}
		return "", fmt.Errorf("want a permissions violation for %s, got: %w", what, err)
	case <-ctx.Done():
		return "", fmt.Errorf("no permissions violation for %s within %s", what, devStepTimeout)
	}
}
