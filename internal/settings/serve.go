package settings

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// DefaultJWKSURL is where the API server publishes the ServiceAccount token keys in a cluster.
const DefaultJWKSURL = "https://kubernetes.default.svc/openid/v1/jwks"

// IssuerAuto as JWT_ISSUER reads the issuer from the API server's OIDC discovery at start-up.
const IssuerAuto = "auto"

// DefaultMaxTTL is USER_JWT_MAX_TTL's default: Kubernetes' default projected-token lifetime, so
// that a long-lived token (a legacy Secret token, or one forged by whoever holds the cluster's
// signing key) does not give a user JWT that lives for years.
const DefaultMaxTTL = time.Hour

// Serve is every setting of the serve command (the sidecar).
type Serve struct {
	NATSURL               string
	CredsFile             string
	SystemCredsFile       string
	SigningKeyFile        string
	Account               string
	XKeyFile              string
	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSServerName         string
	Mode                  string
	TargetSigningKeyFile  string
	CalloutAccountJWTFile string
	TargetAccountJWTFile  string
	Kube                  Kube
	JWKSURL               string
	Issuer                string
	Audience              string
	Log                   Log
	HTTPAddr              string
	Policy                Policy
	Accounts              Accounts
	TenantKeysDir         string
	TenantJWTsDir         string
	MaxTTL                time.Duration
	Workers               int
	RequestTimeout        time.Duration
	JWKSRefresh           time.Duration
	TokenCacheSize        int
	VerifyBoundObjects    bool
	BindSourceIP          bool
	ShowVersion           bool

	// JWKSURLSet says JWKS_URL was given; otherwise a kubeconfig's API server serves the JWKS.
	JWKSURLSet bool
}

// Kube is how the service reaches the Kubernetes API.
type Kube struct {
	InCluster  bool
	Kubeconfig string
}

// Policy is what turns a ServiceAccount's annotations into permissions.
type Policy struct {
	Namespaces      string
	DefaultPub      string
	DefaultSub      string
	AnnotationLimit string
	MaxEntries      int
	MaxBytes        int
}

// Log is the log level and format.
type Log struct {
	Level  string
	Format string
}

// defaultSubjects are kube's built-in default subject templates, as a setting's text.
func defaultSubjects() (pub, sub string) {
	d := kube.DefaultPolicyDefaults()
	return strings.Join(d.Pub, ","), strings.Join(d.Sub, ",")
}

func kubeSettings(k *Kube, inPod bool) []*Setting {
	inCluster := Bool(&k.InCluster, "K8S_IN_CLUSTER", "k8s-in-cluster", inPod,
		"use the pod's in-cluster Kubernetes config; false uses --kubeconfig").defaultDoc("`true` in a pod, else `false`")
	return []*Setting{
		inCluster.doc("use the pod's ServiceAccount; `false` uses `KUBECONFIG`. Outside a pod (no `KUBERNETES_SERVICE_HOST`) the default is `false`, so `explain` and a local `serve` use the kubeconfig"),
		String(&k.Kubeconfig, "KUBECONFIG", "kubeconfig", "", "kubeconfig file(s) when not in cluster, a list as kubectl takes it (default ~/.kube/config)").optional().defaultDoc("`~/.kube/config`").doc("kubeconfig when not in cluster; a list of files separated by `:` is merged as kubectl does"),
	}
}

func policySettings(p *Policy) []*Setting {
	pub, sub := defaultSubjects()
	return []*Setting{
		String(&p.Namespaces, "WATCH_NAMESPACES", "watch-namespaces", "", "comma-separated namespaces whose ServiceAccounts may log in (default all)").optional().defaultDoc("all").doc("comma-separated namespaces whose ServiceAccounts may log in (the informer watches only these)"),
		String(&p.DefaultPub, "DEFAULT_PUB_SUBJECTS", "default-pub-subjects", pub, "subjects every ServiceAccount may publish to; {namespace}, {serviceaccount}, {inbox} are replaced").doc("publish grant of every ServiceAccount"),
		String(&p.DefaultSub, "DEFAULT_SUB_SUBJECTS", "default-sub-subjects", sub, "subjects every ServiceAccount may subscribe to").doc("subscribe grant of every ServiceAccount"),
		String(&p.AnnotationLimit, "ANNOTATION_SUBJECT_LIMIT", "annotation-subject-limit", "", "subjects allow annotations may grant within, e.g. {namespace}.>; entries outside are dropped (default: no limit)").optional().defaultDoc("empty (no limit)").doc("subject patterns allow annotations must stay within, e.g. `{namespace}.>`; entries outside are dropped with a warning (see [Permissions](../README.md#permissions))"),
		Int(&p.MaxEntries, "ANNOTATION_MAX_ENTRIES", "annotation-max-entries", kube.DefaultAnnotationMaxEntries,
			fmt.Sprintf("entries each permission annotation may list (1-%d); an allow list is cut to them, a longer deny list refuses the login", kube.MaxAnnotationMaxEntries)).
			doc(fmt.Sprintf("entries (comma-separated subjects) each `nats.io/` permission annotation may list, at most %d: the entries of an allow annotation beyond it are ignored with a warning; a deny annotation with more refuses the login (`invalid_policy`). Bounds the work and the user JWT of every login (see [Security](security.md))", kube.MaxAnnotationMaxEntries)),
		Int(&p.MaxBytes, "ANNOTATION_MAX_BYTES", "annotation-max-bytes", kube.DefaultAnnotationMaxBytes,
			fmt.Sprintf("bytes of subjects one ServiceAccount's annotations may grant in all (%d-%d); allow entries past it are dropped, deny lists longer refuse the login", kube.MinAnnotationMaxBytes, kube.MaxAnnotationMaxBytes)).
			doc(fmt.Sprintf("bytes of subjects the `nats.io/` permission annotations of one ServiceAccount may grant together (%d to %d). Deny annotations count first and must fit whole, else the login is refused (`invalid_policy`); allow entries (publish, then subscribe) past what is left are ignored with a warning. Defaults do not count. Bounds the user JWT and the cost of every login: 16 KiB is ten times a real grant and keeps the reply near 40 KB (see [Security](security.md))", kube.MinAnnotationMaxBytes, kube.MaxAnnotationMaxBytes)),
	}
}

// boundSettings are VERIFY_BOUND_OBJECTS and BIND_SOURCE_IP.
func boundSettings(verify, sourceIP *bool) []*Setting {
	return []*Setting{
		Bool(verify, "VERIFY_BOUND_OBJECTS", "verify-bound-objects", true,
			"refuse a token whose bound pod, Secret or node is gone or was recreated (needs list/watch on pods); false turns it off").
			doc("a token bound to a pod, Secret or node (projected tokens are bound to their pod) is refused once that object is gone or was recreated under the same name (`pod_not_found`, `pod_uid_mismatch`, ...), as Kubernetes' TokenReview does. Needs `list` and `watch` on pods (a metadata-only informer) and `get` on nodes; `false` turns it off for clusters that will not grant that (see [Bound tokens](bound-tokens.md))"),
		Bool(sourceIP, "BIND_SOURCE_IP", "bind-source-ip", false,
			"accept a token only from its bound pod's IPs (source_ip_mismatch otherwise); needs VERIFY_BOUND_OBJECTS and get on pods").
			doc("accept a token only from the IPs of the pod it is bound to (`status.podIPs`): a client connecting from any other address is refused (`source_ip_mismatch`), and the user JWT carries the IPs as its allowed sources. A token bound to no pod, or a pod without an IP yet, is refused (`pod_no_ip`). Needs `VERIFY_BOUND_OBJECTS` and `get` on pods; does not work for host-network pods or behind proxies and NAT (see [Bound tokens](bound-tokens.md#source-pinning))"),
	}
}

func logSettings(l *Log, format string) []*Setting {
	return []*Setting{
		String(&l.Level, "LOG_LEVEL", "log-level", "info", "debug, info, warn or error").doc("`debug`, `info`, `warn`, `error`"),
		String(&l.Format, "LOG_FORMAT", "log-format", format, "json or text").doc("`json` or `text`"),
	}
}

// ServeTable is the settings of serve, bound to c. inPod is the default of K8S_IN_CLUSTER.
func ServeTable(c *Serve, inPod bool) Table {
	s := []*Setting{
		String(&c.NATSURL, "NATS_URL", "nats-url", "nats://127.0.0.1:4222", "nats-server URL; may carry user:password").doc("the sidecar's own nats-server; may carry `user:password`"),
		String(&c.CredsFile, "NATS_CREDS_FILE", "nats-creds-file", "", "the service's own NATS login: a .creds file or a user nkey seed file").optional().doc("the service's login: a user nkey seed (`SU...`) or a `.creds` file. In server-config mode it logs in with the **nkey** from it (the server lists it as `nkey: U...`). Required unless `NATS_URL` carries `user:password`"),
		String(&c.SystemCredsFile, "NATS_SYSTEM_CREDS_FILE", "nats-system-creds-file", "", "a user of the system account (server-config mode: its nkey seed; operator mode: its .creds file); turns live revocation on").optional().doc("a user of the **system account**: its nkey seed (`SU...`) in server-config mode, its `.creds` file in operator mode. Turns on live revocation: connections whose grant no longer holds are closed (see [docs/revocation.md](revocation.md)). Unset: a grant lasts as long as its user JWT"),
		String(&c.SigningKeyFile, "NATS_SIGNING_KEY_FILE", "nats-signing-key-file", "", "issuer account seed(s) (SA...) that sign responses and user JWTs (required)").defaultDoc("(required)").doc("the issuer **account** seed(s) (`SA...`, one per line) named by `auth_callout.issuer`; signs responses and user JWTs"),
		natsAccountSetting(&c.Account),
		String(&c.XKeyFile, "NATS_XKEY_FILE", "nats-xkey-file", "", "curve seed (SX...) for encrypted callouts; must match auth_callout.xkey").optional().doc("curve seed (`SX...`) whose public key is `auth_callout.xkey`: encrypted callouts"),
		String(&c.TLSCAFile, "NATS_TLS_CA_FILE", "nats-tls-ca-file", "", "CA bundle (PEM) to verify nats-server's TLS certificate; setting any NATS_TLS_* turns TLS on").optional().doc("CA (PEM) of nats-server's certificate; any `NATS_TLS_*` setting turns TLS on"),
		String(&c.TLSCertFile, "NATS_TLS_CERT_FILE", "nats-tls-cert-file", "", "client certificate (PEM) for a nats-server that verifies clients").optional().doc("client certificate (PEM), for a server with `tls { verify: true }`; needs `NATS_TLS_KEY_FILE`"),
		String(&c.TLSKeyFile, "NATS_TLS_KEY_FILE", "nats-tls-key-file", "", "key (PEM) of NATS_TLS_CERT_FILE").optional().doc("key (PEM) of `NATS_TLS_CERT_FILE`"),
		String(&c.TLSServerName, "NATS_TLS_SERVER_NAME", "nats-tls-server-name", "", "name nats-server's certificate must carry (the sidecar dials 127.0.0.1), e.g. nats.nats.svc").optional().defaultDoc("the URL's host").doc("a DNS name in nats-server's certificate: the sidecar dials 127.0.0.1, which certificates rarely name (e.g. `nats.nats.svc`)"),
		String(&c.Mode, "NATS_MODE", "nats-mode", "", "server-config or operator (default: operator when NATS_ACCOUNT is an account public key A..., else server-config)").optional().defaultDoc("see meaning").doc("`server-config` or `operator`; unset means operator when `NATS_ACCOUNT` is an account public key (`A...`)"),
		String(&c.TargetSigningKeyFile, "NATS_TARGET_SIGNING_KEY_FILE", "nats-target-signing-key-file", "", "operator mode: the target account's seed or unscoped signing key seed that signs user JWTs (default NATS_SIGNING_KEY_FILE)").optional().defaultDoc("`NATS_SIGNING_KEY_FILE`").doc("operator mode: the target account's key or **unscoped** signing key that signs user JWTs"),
		String(&c.CalloutAccountJWTFile, "NATS_CALLOUT_ACCOUNT_JWT_FILE", "nats-callout-account-jwt-file", "", "operator mode, optional: the callout account's JWT, to check the setup at start-up").optional().doc("operator mode, optional: the callout account's JWT, which the start-up checks compare the keys with"),
		String(&c.TargetAccountJWTFile, "NATS_TARGET_ACCOUNT_JWT_FILE", "nats-target-account-jwt-file", "", "operator mode, optional: the target account's JWT, to detect a scoped signing key at start-up").optional().doc("operator mode, optional: the target account's JWT, which the start-up checks compare the keys with (catches a scoped signing key)"),
	}
	s = append(s,
		String(&c.TenantKeysDir, "NATS_TENANT_SIGNING_KEYS_DIR", "nats-tenant-signing-keys-dir", "", "operator mode: directory of <ACCOUNT PUBLIC KEY>.nk files, one signing key per tenant account of NATS_ALLOWED_ACCOUNTS").optional().
			doc("operator mode: a directory (a mounted Secret) with one `<account public key>.nk` file per account of `NATS_ALLOWED_ACCOUNTS`: that account's key or an **unscoped** signing key, which signs the user JWTs placed there. The files are reloaded like the other key files; a file for a new account needs a restart"),
		String(&c.TenantJWTsDir, "NATS_TENANT_ACCOUNT_JWTS_DIR", "nats-tenant-account-jwts-dir", "", "operator mode, optional: directory of <ACCOUNT PUBLIC KEY>.jwt account JWTs the tenant signing keys are checked against").optional().
			doc("operator mode, optional: a directory with `<account public key>.jwt` account JWTs (`nsc describe account --raw`), which the start-up checks compare the tenant signing keys with"),
	)
	s = append(s, kubeSettings(&c.Kube, inPod)...)
	s = append(s,
		String(&c.JWKSURL, "JWKS_URL", "jwks-url", DefaultJWKSURL, "JWKS of the ServiceAccount token issuer; with a kubeconfig the default is its API server's /openid/v1/jwks").doc("token signing keys. Served by the API server, it is fetched with the Kubernetes client's CA and credentials (with a kubeconfig and no `JWKS_URL`, from the kubeconfig's server)"),
		String(&c.Issuer, "JWT_ISSUER", "jwt-issuer", "https://kubernetes.default.svc", "expected token issuer (iss); auto reads it from the API server's OIDC discovery at start-up").doc("exact `iss` of tokens (`kubectl get --raw /.well-known/openid-configuration`), or `auto`: read from that document on the API server at start-up (retried for a minute, then start-up stops naming the setting); the Helm values use `auto`"),
		String(&c.Audience, "JWT_AUDIENCE", "jwt-audience", "nats", "audience tokens must carry (aud)").doc("audience tokens must carry"),
	)
	s = append(s, logSettings(&c.Log, "json")...)
	s = append(s, String(&c.HTTPAddr, "HTTP_ADDR", "http-addr", ":8080", "address for /healthz, /readyz and /metrics").doc("`/healthz`, `/readyz`, `/metrics`"))
	s = append(s, policySettings(&c.Policy)...)
	s = append(s, accountSettings(&c.Accounts)...)
	s = append(s, boundSettings(&c.VerifyBoundObjects, &c.BindSourceIP)...)
	s = append(s,
		Duration(&c.MaxTTL, "USER_JWT_MAX_TTL", "user-jwt-max-ttl", DefaultMaxTTL, "cap on user JWT lifetime, never beyond the token's expiry; 0 means the token's expiry").
			doc("cap on the user JWT lifetime, never later than the token's `exp`: a client reconnects, and its token and ServiceAccount are checked again, at least this often. The default is Kubernetes' default projected-token lifetime; `0` means the token's `exp` alone, which for a long-lived token is years (see [Security](security.md))"),
		Int(&c.Workers, "CALLOUT_WORKERS", "callout-workers", 0, "concurrent requests; 0 means 4 per CPU").alias("workers").defaultDoc("4 per CPU").doc("requests handled concurrently"),
		Duration(&c.RequestTimeout, "CALLOUT_REQUEST_TIMEOUT", "callout-request-timeout", 1500*time.Millisecond,
			"per-request deadline; must stay below the server's authorization timeout (default 2s); at most 10s").alias("request-timeout").doc("per-request deadline, counted from the request's arrival; must stay below the server's `authorization.timeout` (default 2 s). Accepted up to 10 s, for servers configured with a longer timeout"),
		Duration(&c.JWKSRefresh, "JWKS_REFRESH_INTERVAL", "jwks-refresh-interval", time.Hour, "background JWKS refresh; unknown key IDs also trigger a (rate-limited) refresh").doc("background JWKS refresh (at least `1m`); an unknown `kid` also refreshes (rate limited)"),
		Int(&c.TokenCacheSize, "TOKEN_CACHE_SIZE", "token-cache-size", kube.DefaultTokenCacheSize, "verified tokens remembered so that a reconnect skips the signature check; 0 turns the cache off").
			doc("tokens remembered after they verified (about 0.5 KB each): a client reconnecting with the same token skips the signature check until the token's `exp`, or until the JWKS drops the key that signed it; its ServiceAccount and uid are still looked up on every login. `0` turns the cache off"),
		Bool(&c.ShowVersion, "", "version", false, "print the version and exit"),
	)
	return Table{
		Command:  "serve",
		Usage:    "Usage: nats-k8s-oidc-callout [serve] [flags]\n\nRuns the auth callout service (the sidecar). Every flag can be set by its environment variable.\n\n",
		Settings: s,
	}
}

// natsAccountSetting is NATS_ACCOUNT, which serve and explain share.
func natsAccountSetting(p *string) *Setting {
	return String(p, "NATS_ACCOUNT", "nats-account", "", "target account users are placed in (required)").defaultDoc("(required)").doc("account users are placed in (user JWT audience), e.g. `APP`; never the system account. With `NATS_ALLOWED_ACCOUNTS`, the account of namespaces without a `nats.io/account` label")
}

// inPod reports whether the process runs in a Kubernetes pod.
func inPod(lookup func(string) (string, bool)) bool {
	if lookup == nil {
		return false
	}
	v, ok := lookup("KUBERNETES_SERVICE_HOST")
	return ok && v != ""
}

// ParseServe reads serve's settings from the environment and args and validates them.
func ParseServe(args []string, lookup func(string) (string, bool), output io.Writer) (Serve, error) {
	var c Serve
	p, err := ServeTable(&c, inPod(lookup)).ParseNoArgs(args, lookup, output)
	if err != nil {
		return c, err
	}
	c.JWKSURLSet = p.IsSet("jwks-url")
	if c.ShowVersion {
		return c, nil
	}
	return c, c.Validate()
}

// ServeDefaults returns serve's settings at their defaults, unvalidated, for a caller that
// fills in the rest itself (dev mode).
func ServeDefaults() Serve {
	var c Serve
	// Parsing no arguments and no environment cannot fail: the defaults are well-formed.
	if _, err := ServeTable(&c, false).Parse(nil, nil, io.Discard); err != nil {
		panic(err)
	}
	return c
}

// Operator reports whether the service runs in operator (decentralized JWT) mode.
func (c Serve) Operator() bool {
	if c.Mode == "" {
		return nkeys.IsValidPublicAccountKey(c.Account)
	}
	return c.Mode == "operator"
}

// TLS is the TLS set-up of the NATS connection, nil unless a NATS_TLS_* setting is given.
func (c Serve) TLS() *callout.TLSFiles {
	if c.TLSCAFile == "" && c.TLSCertFile == "" && c.TLSKeyFile == "" && c.TLSServerName == "" {
		return nil
	}
	return &callout.TLSFiles{CAFile: c.TLSCAFile, CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile, ServerName: c.TLSServerName}
}

// Validate checks the settings together; an error names the setting at fault.
func (c Serve) Validate() error {
	u, err := url.Parse(strings.Split(c.NATSURL, ",")[0])
	if err != nil || u.Host == "" {
		return fmt.Errorf("NATS_URL: %s is not a URL like nats://127.0.0.1:4222", callout.RedactURL(c.NATSURL))
	}
	if err := c.validateMode(); err != nil {
		return err
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
	case c.TokenCacheSize < 0:
		return errors.New("TOKEN_CACHE_SIZE must not be negative (0 turns the cache off)")
	case c.JWKSRefresh < time.Minute:
		return fmt.Errorf("JWKS_REFRESH_INTERVAL: %s is too short (minimum 1m)", c.JWKSRefresh)
	case c.BindSourceIP && !c.VerifyBoundObjects:
		return errors.New("BIND_SOURCE_IP=true needs VERIFY_BOUND_OBJECTS=true: a user is pinned to the pod its token is bound to, which must be checked to exist")
	}
	if _, err := url.ParseRequestURI(c.JWKSURL); err != nil {
		return fmt.Errorf("JWKS_URL: %q is not a URL", c.JWKSURL)
	}
	if err := c.Log.Validate(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("HTTP_ADDR: %q is not host:port (e.g. :8080)", c.HTTPAddr)
	}
	if t := c.TLS(); t != nil {
		if err := t.Check(); err != nil {
			return err
		}
	}
	if err := c.Policy.Validate(); err != nil {
		return err
	}
	_, err = c.AccountDefaults()
	return err
}

// AccountDefaults are the validated per-account defaults (ACCOUNT_DEFAULTS).
func (c Serve) AccountDefaults() (map[string]kube.PolicyDefaults, error) {
	return c.Accounts.Validate(c.Account, c.Operator(), c.Policy.Defaults())
}

func (c Serve) validateMode() error {
	switch c.Mode {
	case "", "server-config", "operator":
	default:
		return fmt.Errorf("NATS_MODE: %q must be server-config or operator", c.Mode)
	}
	if c.Operator() {
		switch {
		case !nkeys.IsValidPublicAccountKey(c.Account):
			return errors.New("NATS_ACCOUNT: in operator mode it must be the target account's public key (A...): nsc describe account APP --field sub")
		case c.CredsFile == "":
			return errors.New("NATS_CREDS_FILE is required in operator mode: the .creds file of the service's user in the callout account")
		}
		if len(c.Accounts.AllowedList()) > 0 && c.TenantKeysDir == "" {
			return errors.New("NATS_TENANT_SIGNING_KEYS_DIR is required in operator mode with NATS_ALLOWED_ACCOUNTS: user JWTs placed in a tenant account are signed by a key of that account")
		}
	} else if c.TargetSigningKeyFile != "" || c.CalloutAccountJWTFile != "" || c.TargetAccountJWTFile != "" || c.TenantKeysDir != "" || c.TenantJWTsDir != "" {
		return errors.New("NATS_TARGET_SIGNING_KEY_FILE, NATS_CALLOUT_ACCOUNT_JWT_FILE, NATS_TARGET_ACCOUNT_JWT_FILE and NATS_TENANT_* apply to operator mode only (set NATS_MODE=operator)")
	}
	return nil
}

// Validate checks LOG_LEVEL and LOG_FORMAT.
func (l Log) Validate() error {
	if _, err := ParseLevel(l.Level); err != nil {
		return err
	}
	if l.Format != "json" && l.Format != "text" {
		return fmt.Errorf("LOG_FORMAT: %q must be json or text", l.Format)
	}
	return nil
}

// Validate checks DEFAULT_PUB_SUBJECTS, DEFAULT_SUB_SUBJECTS, ANNOTATION_SUBJECT_LIMIT,
// ANNOTATION_MAX_ENTRIES and ANNOTATION_MAX_BYTES one at a time, so that an error names the setting, then the templates
// of the three together (a limit whose subjects can reach another namespace's defaults).
func (p Policy) Validate() error {
	if p.MaxEntries < 1 || p.MaxEntries > kube.MaxAnnotationMaxEntries {
		return fmt.Errorf("ANNOTATION_MAX_ENTRIES: %d is not between 1 and %d", p.MaxEntries, kube.MaxAnnotationMaxEntries)
	}
	if p.MaxBytes < kube.MinAnnotationMaxBytes || p.MaxBytes > kube.MaxAnnotationMaxBytes {
		return fmt.Errorf("ANNOTATION_MAX_BYTES: %d is not between %d and %d", p.MaxBytes, kube.MinAnnotationMaxBytes, kube.MaxAnnotationMaxBytes)
	}
	d, none := p.Defaults(), []string{}
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
	// Templates of two settings that collide with each other.
	var collision *kube.CollisionError
	if err := d.Validate(); errors.As(err, &collision) {
		first, second := policySetting[collision.First.List], policySetting[collision.Second.List]
		return fmt.Errorf("%s and %s: %s", first, second, collision.Describe(func(list string) string { return policySetting[list] }))
	} else if err != nil {
		return err
	}
	return nil
}

// policySetting names the setting of each of kube's template lists.
var policySetting = map[string]string{
	kube.ListDefaultPub:      "DEFAULT_PUB_SUBJECTS",
	kube.ListDefaultSub:      "DEFAULT_SUB_SUBJECTS",
	kube.ListAnnotationLimit: "ANNOTATION_SUBJECT_LIMIT",
}

// Defaults are the subjects and the annotation limit the policy settings give.
func (p Policy) Defaults() kube.PolicyDefaults {
	return kube.PolicyDefaults{Pub: SplitList(p.DefaultPub), Sub: SplitList(p.DefaultSub), AnnotationLimit: SplitList(p.AnnotationLimit), MaxEntries: p.MaxEntries, MaxBytes: p.MaxBytes}
}

// WatchedNamespaces is WATCH_NAMESPACES as a list; empty means all.
func (p Policy) WatchedNamespaces() []string { return SplitList(p.Namespaces) }

// SplitList splits a comma-separated setting, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
