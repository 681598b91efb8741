package callout

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/nats-io/nkeys"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

// Account names of the default server-config-mode layout.
const (
	// DefaultCalloutAccount holds only the callout service's own user: the server sends
	// callout requests into it, so nothing else should be able to log in there.
	DefaultCalloutAccount = "AUTH"
	// DefaultTargetAccount is where workloads are placed (NATS_ACCOUNT).
	DefaultTargetAccount = "APP"
	// DefaultSystemAccount is the server's system account; users are never placed in it.
	DefaultSystemAccount = "SYS"
)

// ServerConfig is everything a nats-server in server-config mode needs to send its auth
// callouts to this service: the accounts, the system account, and the
// authorization.auth_callout block. Render it with NATSConfig (nats-server config text) or
// HelmConfigMerge (the same for the NATS Helm chart's config.merge).
type ServerConfig struct {
	// ServiceUser is the service's own login, a user public key (U...). It is the only user of
	// the callout account and is listed in auth_users.
	ServiceUser string
	// Issuer is auth_callout.issuer: the account public key (A...) whose seed signs responses
	// and user JWTs (NATS_SIGNING_KEY_FILE). nats-server takes exactly one.
	Issuer string
	// XKey is auth_callout.xkey, a curve public key (X...) for encrypted callouts
	// (NATS_XKEY_FILE). Empty means requests travel unencrypted inside the callout account.
	XKey string
	// CalloutAccount is auth_callout.account (default AUTH).
	CalloutAccount string
	// TargetAccounts are the accounts workloads may be placed in (default APP). The first is
	// the one the sidecar's NATS_ACCOUNT names.
	TargetAccounts []string
	// SystemAccount is system_account (default SYS).
	SystemAccount string
	// JetStream enables JetStream in the target accounts and the accounts of bypass users.
	// Without it, accounts defined in the server config get no JetStream even when the server
	// runs it.
	JetStream bool
	// BypassUsers log in with their own nkey and skip the callout (they are added to
	// auth_users), e.g. a NACK controller or an administrator.
	BypassUsers []BypassUser
}

// BypassUser is a user that authenticates with its own nkey instead of through the callout.
type BypassUser struct {
	// Account the user belongs to; created if it is not one of the other accounts. It may be
	// the system account or a target account, never the callout account.
	Account string
	// Nkey is the user's public key (U...).
	Nkey string
}

// ErrInvalidServerConfig is wrapped by every ServerConfig validation error: the settings would
// give a nats-server config that is refused, or one that silently sends logins nowhere.
var ErrInvalidServerConfig = errors.New("invalid auth callout server config")

var accountName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

// ParseBypassUser parses ACCOUNT=UNKEY, the form of a command-line flag.
func ParseBypassUser(s string) (BypassUser, error) {
	acc, key, ok := strings.Cut(s, "=")
	if !ok {
		return BypassUser{}, fmt.Errorf("%w: bypass user %s: want ACCOUNT=U... (e.g. NACK=UABC...)", ErrInvalidServerConfig, shown(s))
	}
	u := BypassUser{Account: strings.TrimSpace(acc), Nkey: strings.TrimSpace(key)}
	return u, u.validate()
}

func (u BypassUser) validate() error {
	if !accountName.MatchString(u.Account) {
		return fmt.Errorf("%w: bypass user account %q: %s", ErrInvalidServerConfig, u.Account, accountNameRule)
	}
	if !nkeys.IsValidPublicUserKey(u.Nkey) {
		return fmt.Errorf("%w: bypass user %s in %s: %s", ErrInvalidServerConfig, shown(u.Nkey), u.Account, wantKind("user", "U", u.Nkey))
	}
	return nil
}

const accountNameRule = "account names start with a letter and use only letters, digits, '_' and '-' (at most 64)"

// wantKind explains what key was expected and what was given instead, without echoing
// anything that could be a seed.
func wantKind(want, prefix, got string) string {
	switch {
	case got == "":
		return fmt.Sprintf("%s public key (%s...) is required", article(want), prefix)
	case strings.HasPrefix(got, "S"):
		return fmt.Sprintf("this looks like a seed (private key); give the %s public key (%s...) instead", want, prefix)
	case keyKind(got) != "unknown":
		return fmt.Sprintf("this is %s public key; %s public key (%s...) is required", article(keyKind(got)), article(want), prefix)
	default:
		return fmt.Sprintf("not a valid nkey; %s public key (%s...) is required", article(want), prefix)
	}
}

// article puts "a" or "an" before a key kind ("a user": its u sounds like "you").
func article(kind string) string {
	if strings.ContainsRune("aeio", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}

// shown quotes a value for an error message unless it may be a seed, which is never echoed.
func shown(v string) string {
	if strings.HasPrefix(strings.TrimSpace(v), "S") {
		return "(not shown: it may be a private key)"
	}
	return fmt.Sprintf("%q", v)
}

// withDefaults fills in the default account names.
func (c ServerConfig) withDefaults() ServerConfig {
	if c.CalloutAccount == "" {
		c.CalloutAccount = DefaultCalloutAccount
	}
	if len(c.TargetAccounts) == 0 {
		c.TargetAccounts = []string{DefaultTargetAccount}
	}
	if c.SystemAccount == "" {
		c.SystemAccount = DefaultSystemAccount
	}
	return c
}

// Validate reports the first setting that would give a broken or unsafe server config.
// Empty account names take their defaults.
func (c ServerConfig) Validate() error {
	c = c.withDefaults()
	if !nkeys.IsValidPublicUserKey(c.ServiceUser) {
		return fmt.Errorf("%w: service user %s: %s", ErrInvalidServerConfig, shown(c.ServiceUser), wantKind("user", "U", c.ServiceUser))
	}
	if !nkeys.IsValidPublicAccountKey(c.Issuer) {
		msg := wantKind("account", "A", c.Issuer)
		if nkeys.IsValidPublicUserKey(c.Issuer) {
			msg += " (auth_callout.issuer names the account key that signs responses, not the service's user key)"
		}
		return fmt.Errorf("%w: issuer %s: %s", ErrInvalidServerConfig, shown(c.Issuer), msg)
	}
	if c.XKey != "" && !nkeys.IsValidPublicCurveKey(c.XKey) {
		return fmt.Errorf("%w: xkey %s: %s", ErrInvalidServerConfig, shown(c.XKey), wantKind("curve", "X", c.XKey))
	}
	for _, n := range append([]string{c.CalloutAccount, c.SystemAccount}, c.TargetAccounts...) {
		if !accountName.MatchString(n) {
			return fmt.Errorf("%w: account %q: %s", ErrInvalidServerConfig, n, accountNameRule)
		}
	}
	if c.CalloutAccount == c.SystemAccount {
		return fmt.Errorf("%w: the callout account and the system account are both %q; they must differ", ErrInvalidServerConfig, c.CalloutAccount)
	}
	seen := map[string]bool{}
	for _, t := range c.TargetAccounts {
		switch {
		case t == c.CalloutAccount:
			return fmt.Errorf("%w: target account %q is the callout account, which must hold only the service user", ErrInvalidServerConfig, t)
		case t == c.SystemAccount:
			return fmt.Errorf("%w: target account %q is the system account; workloads must never be placed there", ErrInvalidServerConfig, t)
		case seen[t]:
			return fmt.Errorf("%w: target account %q is listed twice", ErrInvalidServerConfig, t)
		}
		seen[t] = true
	}
	users := map[string]bool{c.ServiceUser: true}
	for _, u := range c.BypassUsers {
		if err := u.validate(); err != nil {
			return err
		}
		if u.Account == c.CalloutAccount {
			return fmt.Errorf("%w: bypass user %s is in the callout account %q, which must hold only the service user", ErrInvalidServerConfig, u.Nkey, u.Account)
		}
		if users[u.Nkey] {
			return fmt.Errorf("%w: user %s is listed twice (bypass users need keys of their own)", ErrInvalidServerConfig, u.Nkey)
		}
		users[u.Nkey] = true
	}
	return nil
}

// account is one entry of the rendered accounts block.
type account struct {
	name      string
	users     []string // nkeys
	jetstream bool
	comment   string
}

// accounts lists the accounts in render order: callout, targets, accounts of bypass users
// that are not already listed, system.
func (c ServerConfig) accounts() []account {
	byName := map[string]*account{}
	var order []string
	add := func(name, comment string, js bool) *account {
		if a, ok := byName[name]; ok {
			return a
		}
		byName[name] = &account{name: name, comment: comment, jetstream: js}
		order = append(order, name)
		return byName[name]
	}
	add(c.CalloutAccount, "callout requests arrive here; holds only the service's user", false).users = []string{c.ServiceUser}
	for _, t := range c.TargetAccounts {
		add(t, "workloads are placed here by the callout", c.JetStream)
	}
	for _, u := range c.BypassUsers {
		if u.Account == c.SystemAccount {
			continue
		}
		a := add(u.Account, "users that log in with their own nkey, bypassing the callout", c.JetStream)
		a.users = append(a.users, u.Nkey)
	}
	sys := add(c.SystemAccount, "system account; never a callout target", false)
	for _, u := range c.BypassUsers {
		if u.Account == c.SystemAccount {
			sys.users = append(sys.users, u.Nkey)
		}
	}
	out := make([]account, 0, len(order))
	for _, n := range order {
		out = append(out, *byName[n])
	}
	return out
}

// authUsers are the users that skip the callout: the service itself and the bypass users.
func (c ServerConfig) authUsers() []string {
	out := []string{c.ServiceUser}
	for _, u := range c.BypassUsers {
		out = append(out, u.Nkey)
	}
	return out
}

// NATSConfig renders the accounts, system_account and authorization blocks as nats-server
// config text, ready to be included in (or appended to) a server config.
func (c ServerConfig) NATSConfig() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	var b strings.Builder
	b.WriteString("# Auth callout for nats-k8s-oidc-callout (server-config mode).\n")
	b.WriteString("# Clients without their own login are sent to the callout service, which places\n")
	b.WriteString("# them in " + strings.Join(c.TargetAccounts, ", ") + ". The users in auth_users bypass the callout.\n")
	b.WriteString("accounts {\n")
	for _, a := range c.accounts() {
		fmt.Fprintf(&b, "  # %s\n", a.comment)
		if len(a.users) == 0 && !a.jetstream {
			fmt.Fprintf(&b, "  %s: {}\n", a.name)
			continue
		}
		fmt.Fprintf(&b, "  %s: {\n", a.name)
		if a.jetstream {
			b.WriteString("    jetstream: enabled\n")
		}
		if len(a.users) > 0 {
			b.WriteString("    users: [\n")
			for _, u := range a.users {
				fmt.Fprintf(&b, "      { nkey: %q }\n", u)
			}
			b.WriteString("    ]\n")
		}
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "system_account: %s\n", c.SystemAccount)
	b.WriteString("authorization {\n  auth_callout {\n")
	b.WriteString("    # account key whose seed the service signs with (NATS_SIGNING_KEY_FILE)\n")
	fmt.Fprintf(&b, "    issuer: %q\n", c.Issuer)
	quoted := make([]string, 0, len(c.BypassUsers)+1)
	for _, u := range c.authUsers() {
		quoted = append(quoted, fmt.Sprintf("%q", u))
	}
	fmt.Fprintf(&b, "    auth_users: [ %s ]\n", strings.Join(quoted, ", "))
	fmt.Fprintf(&b, "    account: %s\n", c.CalloutAccount)
	if c.XKey != "" {
		b.WriteString("    # curve key requests are sealed to (NATS_XKEY_FILE)\n")
		fmt.Fprintf(&b, "    xkey: %q\n", c.XKey)
	}
	b.WriteString("  }\n}\n")
	return []byte(b.String()), nil
}

// HelmConfigMerge returns the same configuration as NATSConfig in the shape of the official
// NATS Helm chart's config.merge value (the chart renders it to JSON, which nats-server reads).
// Maps are map[string]any and lists []any, so the result marshals to YAML or JSON as is.
func (c ServerConfig) HelmConfigMerge() (map[string]any, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	accounts := map[string]any{}
	for _, a := range c.accounts() {
		m := map[string]any{}
		if a.jetstream {
			m["jetstream"] = "enabled"
		}
		if len(a.users) > 0 {
			users := make([]any, 0, len(a.users))
			for _, u := range a.users {
				users = append(users, map[string]any{"nkey": u})
			}
			m["users"] = users
		}
		accounts[a.name] = m
	}
	authUsers := make([]any, 0, len(c.BypassUsers)+1)
	for _, u := range c.authUsers() {
		authUsers = append(authUsers, u)
	}
	callout := map[string]any{
		"issuer":     c.Issuer,
		"auth_users": authUsers,
		"account":    c.CalloutAccount,
	}
	if c.XKey != "" {
		callout["xkey"] = c.XKey
	}
	return map[string]any{
		"accounts":       accounts,
		"system_account": c.SystemAccount,
		"authorization":  map[string]any{"auth_callout": callout},
	}, nil
}

// The Secret the sidecar reads, mounted as a directory (never with subPath: kubelet updates a
// Secret volume by swapping a symlink, which a subPath mount never sees).
const (
	// DefaultSecretName is the Secret's name in the helm-values files.
	DefaultSecretName = "nats-callout" //nolint:gosec // the Secret's name, not a credential
	// SecretMountDir is where helm-values mount the Secret in the sidecar.
	SecretMountDir = "/etc/nats-callout" //nolint:gosec // a path, not a credential
	// SecretKeyService holds the service's user seed (NATS_CREDS_FILE).
	SecretKeyService = "service.nk"
	// SecretKeyIssuer holds the issuer account seed(s), one per line (NATS_SIGNING_KEY_FILE).
	SecretKeyIssuer = "issuer.nk"
	// SecretKeyXKey holds the curve seed (NATS_XKEY_FILE).
	SecretKeyXKey = "xkey.nk"
)

// Seeds are the private keys the service's Secret holds.
type Seeds struct {
	// Service is the user seed (SU...) the service logs in to nats-server with.
	Service []byte
	// Issuers are account seeds (SA...). The first is the one auth_callout.issuer names; any
	// others are kept while an issuer rotation rolls through the NATS pods.
	Issuers [][]byte
	// XKey is the curve seed (SX...) callout requests are sealed to.
	XKey []byte
}

// seedPublic is the public side of Seeds, checked key type by key type.
type seedPublic struct {
	service string
	issuers []string
	xkey    string
}

func (s Seeds) public() (seedPublic, error) {
	var p seedPublic
	creds, err := ParseCredentials(s.Service)
	if err != nil {
		return p, fmt.Errorf("%s: %w", SecretKeyService, err)
	}
	p.service = creds.PublicKey()
	if len(s.Issuers) == 0 {
		return p, fmt.Errorf("%s: no issuer account seed", SecretKeyIssuer)
	}
	ring, err := ParseSigningKeys(bytes.Join(s.Issuers, []byte("\n")))
	if err != nil {
		return p, fmt.Errorf("%s: %w", SecretKeyIssuer, err)
	}
	if p.issuers = ring.PublicKeys(); len(p.issuers) != len(s.Issuers) {
		return p, fmt.Errorf("%s: %d seeds given but %d distinct account keys found (one seed per entry, no duplicates)", SecretKeyIssuer, len(s.Issuers), len(p.issuers))
	}
	x, err := ParseXKey(s.XKey)
	if err != nil {
		return p, fmt.Errorf("%s: %w", SecretKeyXKey, err)
	}
	p.xkey = x.PublicKey()
	return p, nil
}

// LogValue shows public keys only.
func (s Seeds) LogValue() slog.Value {
	p, err := s.public()
	if err != nil {
		return slog.StringValue("invalid seeds")
	}
	return slog.GroupValue(slog.String("service", p.service), slog.Any("issuers", p.issuers), slog.String("xkey", p.xkey))
}

// SecretManifest renders a Kubernetes Secret manifest (YAML, base64 data) holding seeds under
// the keys the sidecar reads. Every seed is checked to be of the right key type first.
func SecretManifest(namespace, name string, s Seeds) ([]byte, error) {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return nil, fmt.Errorf("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Errorf("secret name %q: %s", name, strings.Join(errs, "; "))
	}
	p, err := s.public()
	if err != nil {
		return nil, err
	}
	// A copy: appending to the trimmed slice could write into the caller's seed.
	line := func(b []byte) []byte { return append(append([]byte(nil), bytes.TrimSpace(b)...), '\n') }
	var issuers []byte
	for _, seed := range s.Issuers {
		issuers = append(issuers, line(seed)...)
	}
	b64 := base64.StdEncoding.EncodeToString
	var b strings.Builder
	b.WriteString("# Private keys of nats-k8s-oidc-callout. Keep this file out of version control (or encrypt it).\n")
	b.WriteString("# Apply with `kubectl apply --server-side -f` (no last-applied annotation copying the keys).\n")
	b.WriteString("# Mount it as a directory, never with subPath, so that rotations reach the running sidecar.\n")
	fmt.Fprintf(&b, "#   %-10s user seed of %s (NATS_CREDS_FILE)\n", SecretKeyService, p.service)
	fmt.Fprintf(&b, "#   %-10s account seed(s) of %s (NATS_SIGNING_KEY_FILE; the first is auth_callout.issuer)\n", SecretKeyIssuer, strings.Join(p.issuers, ", "))
	fmt.Fprintf(&b, "#   %-10s curve seed of %s (NATS_XKEY_FILE)\n", SecretKeyXKey, p.xkey)
	b.WriteString("apiVersion: v1\nkind: Secret\nmetadata:\n")
	fmt.Fprintf(&b, "  name: %s\n  namespace: %s\n", name, namespace)
	b.WriteString("  labels:\n    app.kubernetes.io/name: nats-k8s-oidc-callout\n    app.kubernetes.io/component: auth-callout\n")
	b.WriteString("type: Opaque\ndata:\n")
	fmt.Fprintf(&b, "  %s: %s\n", SecretKeyIssuer, b64(issuers))
	fmt.Fprintf(&b, "  %s: %s\n", SecretKeyService, b64(line(s.Service)))
	fmt.Fprintf(&b, "  %s: %s\n", SecretKeyXKey, b64(line(s.XKey)))
	return []byte(b.String()), nil
}

// ParseSecretManifest reads a Secret written by SecretManifest, or the output of
// `kubectl get secret NAME -o yaml` (data or stringData), and returns its seeds.
func ParseSecretManifest(data []byte) (namespace, name string, s Seeds, err error) {
	// The fields of a v1 Secret, so that strict decoding takes what kubectl prints.
	var sec struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata,omitempty"`
		Immutable         *bool             `json:"immutable,omitempty"`
		Data              map[string][]byte `json:"data,omitempty"`
		StringData        map[string]string `json:"stringData,omitempty"`
		Type              string            `json:"type,omitempty"`
	}
	if err := yaml.UnmarshalStrict(data, &sec); err != nil {
		// Never include the input: it holds private keys.
		return "", "", s, errors.New("not a Secret manifest: cannot parse it as YAML or JSON")
	}
	if sec.Kind != "Secret" {
		return "", "", s, fmt.Errorf("not a Secret manifest (kind %q)", sec.Kind)
	}
	get := func(key string) ([]byte, error) {
		if v, ok := sec.StringData[key]; ok {
			return []byte(v), nil
		}
		if v, ok := sec.Data[key]; ok {
			return v, nil
		}
		return nil, fmt.Errorf("secret %s/%s has no %s: not a Secret written by init", sec.Namespace, sec.Name, key)
	}
	if s.Service, err = get(SecretKeyService); err != nil {
		return "", "", Seeds{}, err
	}
	issuers, err := get(SecretKeyIssuer)
	if err != nil {
		return "", "", Seeds{}, err
	}
	for l := range bytes.Lines(issuers) {
		if l = bytes.TrimSpace(l); len(l) > 0 {
			s.Issuers = append(s.Issuers, l)
		}
	}
	if s.XKey, err = get(SecretKeyXKey); err != nil {
		return "", "", Seeds{}, err
	}
	s.Service, s.XKey = bytes.TrimSpace(s.Service), bytes.TrimSpace(s.XKey)
	if _, err := s.public(); err != nil {
		return "", "", Seeds{}, fmt.Errorf("secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return sec.Namespace, sec.Name, s, nil
}

// Files GenerateInstall writes.
const (
	InstallSecretFile       = "secret.yaml"
	InstallServerConfigFile = "nats-auth.conf"
	InstallHelmValuesFile   = "helm-values.yaml"
)

// Errors of GenerateInstall. Each means the request was refused as asked, nothing was changed.
var (
	// ErrSecretExists means keys were generated before (an existing Secret was found) and
	// neither a rotation nor the end of one was asked for: keys are never replaced silently.
	ErrSecretExists = errors.New("a Secret with keys exists already")
	// ErrNoSecret means a rotation was asked for but there is no existing Secret to rotate.
	ErrNoSecret = errors.New("no existing Secret to rotate")
	// ErrRotationInProgress means the existing Secret still holds an old issuer key next to the
	// current one: the previous rotation has not been finished.
	ErrRotationInProgress = errors.New("an issuer rotation is still in progress")
	// ErrNoRotation means finishing a rotation was asked for but the Secret holds one issuer key.
	ErrNoRotation = errors.New("no issuer rotation in progress")
)

// InstallOptions say what GenerateInstall produces.
type InstallOptions struct {
	// Namespace of the NATS release; the Secret is created there. Taken from ExistingSecret
	// when empty.
	Namespace string
	// SecretName defaults to DefaultSecretName (or ExistingSecret's name).
	SecretName string
	// CalloutAccount, TargetAccounts, SystemAccount, JetStream and BypassUsers are passed to
	// ServerConfig (see there); empty names take the defaults AUTH, APP, SYS.
	CalloutAccount string
	TargetAccounts []string
	SystemAccount  string
	JetStream      bool
	BypassUsers    []BypassUser
	// ExistingSecret is the Secret manifest of an earlier run (or `kubectl get secret -o yaml`),
	// nil if there is none. Its keys are kept unless Rotate says otherwise.
	ExistingSecret []byte
	// Rotate replaces the issuer key of ExistingSecret with a new one and keeps the old one
	// next to it, so servers still configured with the old issuer keep getting answers while
	// the new config rolls out. The service user and the xkey are kept.
	Rotate bool
	// FinishRotation drops the old issuer key(s) of ExistingSecret once every server runs with
	// the new issuer; nothing else changes.
	FinishRotation bool
}

// InstallFile is one generated file.
type InstallFile struct {
	// Name is the file name, relative to the output directory.
	Name string
	// Data is the file content.
	Data []byte
	// Mode is the permission to write it with (0600 for private keys).
	Mode fs.FileMode
}

// InstallFiles are the generated files, consistent with each other: the Secret's seeds are the
// private halves of the keys the server config and the Helm values name.
type InstallFiles struct {
	// Secret is the Kubernetes Secret manifest with the seeds.
	Secret InstallFile
	// ServerConfig is the nats-server config block (accounts, system_account, authorization).
	ServerConfig InstallFile
	// HelmValues holds the same config as config.merge for the NATS Helm chart.
	HelmValues InstallFile
	// Config is the server config that was rendered (public keys and account names).
	Config ServerConfig
	// Namespace and SecretName locate the Secret.
	Namespace, SecretName string
	// Rotated is set when the issuer key was rotated, Finished when a rotation was finished.
	Rotated, Finished bool
	// OldIssuers are issuer keys kept in the Secret next to Config.Issuer during a rotation.
	OldIssuers []string

	// replaces is the SHA-256 of the Secret manifest this run started from, if any: WriteDir
	// replaces an existing secret file only if it is still exactly that one.
	replaces *[sha256.Size]byte
}

// GenerateInstall creates (or rotates) the service's keys and renders the Secret manifest, the
// nats-server config and the Helm values that go with them. It does no I/O; see WriteDir.
//
// Without ExistingSecret it generates a service user, an issuer account key and an xkey. With
// one it refuses (ErrSecretExists) unless Rotate or FinishRotation is set.
func GenerateInstall(opts InstallOptions) (InstallFiles, error) {
	var out InstallFiles
	if opts.Rotate && opts.FinishRotation {
		return out, errors.New("rotate and finish-rotation are two separate steps; ask for one at a time")
	}
	var seeds Seeds
	if opts.ExistingSecret == nil {
		if opts.Rotate || opts.FinishRotation {
			return out, ErrNoSecret
		}
		var err error
		if seeds, err = newSeeds(); err != nil {
			return out, err
		}
	} else {
		ns, name, existing, err := ParseSecretManifest(opts.ExistingSecret)
		if err != nil {
			return out, fmt.Errorf("existing Secret: %w", err)
		}
		if opts.Namespace == "" {
			opts.Namespace = ns
		}
		if opts.SecretName == "" {
			opts.SecretName = name
		}
		if ns != "" && ns != opts.Namespace || name != "" && name != opts.SecretName {
			return out, fmt.Errorf("the existing Secret is %s/%s, not %s/%s: keys are rotated in the Secret they live in", ns, name, opts.Namespace, opts.SecretName)
		}
		ep, err := existing.public()
		if err != nil {
			return out, fmt.Errorf("existing Secret: %w", err)
		}
		current := ep.issuers[0]
		switch {
		case opts.Rotate && len(existing.Issuers) > 1:
			return out, fmt.Errorf("%w: %s holds %d issuer keys; once every NATS server runs with issuer %s, finish it first",
				ErrRotationInProgress, SecretKeyIssuer, len(existing.Issuers), current)
		case opts.Rotate:
			kp, err := nkeys.CreateAccount()
			if err != nil {
				return out, err
			}
			fresh, err := kp.Seed()
			if err != nil {
				return out, err
			}
			seeds = Seeds{Service: existing.Service, Issuers: [][]byte{fresh, existing.Issuers[0]}, XKey: existing.XKey}
			out.Rotated = true
		case opts.FinishRotation && len(existing.Issuers) == 1:
			return out, fmt.Errorf("%w: %s holds only issuer %s", ErrNoRotation, SecretKeyIssuer, current)
		case opts.FinishRotation:
			seeds = Seeds{Service: existing.Service, Issuers: existing.Issuers[:1], XKey: existing.XKey}
			out.Finished = true
		default:
			return out, fmt.Errorf("%w (issuer %s): keys are never replaced silently; rotate the issuer key deliberately (--rotate) or write to another directory", ErrSecretExists, current)
		}
		sum := sha256.Sum256(opts.ExistingSecret)
		out.replaces = &sum
	}
	if opts.Namespace == "" {
		return out, errors.New("namespace is required: the namespace of the NATS release, where the Secret goes")
	}
	if opts.SecretName == "" {
		opts.SecretName = DefaultSecretName
	}

	pub, err := seeds.public()
	if err != nil {
		return out, err
	}
	out.Config = ServerConfig{
		ServiceUser: pub.service, Issuer: pub.issuers[0], XKey: pub.xkey,
		CalloutAccount: opts.CalloutAccount, TargetAccounts: opts.TargetAccounts, SystemAccount: opts.SystemAccount,
		JetStream: opts.JetStream, BypassUsers: opts.BypassUsers,
	}.withDefaults()
	out.OldIssuers = pub.issuers[1:]
	out.Namespace, out.SecretName = opts.Namespace, opts.SecretName

	conf, err := out.Config.NATSConfig()
	if err != nil {
		return out, err
	}
	merge, err := out.Config.HelmConfigMerge()
	if err != nil {
		return out, err
	}
	values, err := yaml.Marshal(map[string]any{"config": map[string]any{"merge": merge}})
	if err != nil {
		return out, err
	}
	secret, err := SecretManifest(opts.Namespace, opts.SecretName, seeds)
	if err != nil {
		return out, err
	}
	out.Secret = InstallFile{Name: InstallSecretFile, Data: secret, Mode: 0o600}
	out.ServerConfig = InstallFile{Name: InstallServerConfigFile, Data: conf, Mode: 0o644}
	out.HelmValues = InstallFile{Name: InstallHelmValuesFile, Data: append([]byte(helmValuesHeader), values...), Mode: 0o644}
	return out, nil
}

const helmValuesHeader = `# Auth callout server config for the official NATS Helm chart (server-config mode), generated by
# ` + "`nats-k8s-oidc-callout init`" + `. Public keys only: the matching seeds are in secret.yaml.
# Pass this file AFTER helm-values/callout-values.yaml so that these keys replace its placeholders.
# Helm merges maps from several -f files (later files win) but replaces lists, such as users.
`

// newSeeds generates a service user, an issuer account key and an xkey.
func newSeeds() (Seeds, error) {
	var s Seeds
	for _, k := range []struct {
		create func() (nkeys.KeyPair, error)
		dst    *[]byte
	}{{nkeys.CreateUser, &s.Service}, {nkeys.CreateCurveKeys, &s.XKey}} {
		kp, err := k.create()
		if err != nil {
			return s, err
		}
		if *k.dst, err = kp.Seed(); err != nil {
			return s, err
		}
	}
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return s, err
	}
	issuer, err := kp.Seed()
	if err != nil {
		return s, err
	}
	s.Issuers = [][]byte{issuer}
	return s, nil
}

// Files lists the generated files, the Secret first.
func (f InstallFiles) Files() []InstallFile {
	return []InstallFile{f.Secret, f.ServerConfig, f.HelmValues}
}

// WriteDir writes the files into dir (created with mode 0700 if missing), each atomically
// with its mode. An existing secret file is replaced only if it is the one GenerateInstall
// started from (ExistingSecret), so keys are never lost to a second run or a race.
func (f InstallFiles) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	secretPath := filepath.Join(dir, f.Secret.Name)
	switch cur, err := os.ReadFile(secretPath); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case f.replaces == nil:
		return fmt.Errorf("%s: %w; read it and pass it as the existing Secret to rotate deliberately", secretPath, ErrSecretExists)
	case sha256.Sum256(cur) != *f.replaces:
		return fmt.Errorf("%s changed since it was read; nothing written", secretPath)
	}
	for _, file := range f.Files() {
		if err := reload.WriteFile(filepath.Join(dir, file.Name), file.Data, file.Mode); err != nil {
			return err
		}
	}
	return nil
}

// NextSteps tells an operator what to run after WriteDir(dir), in order. Commands assume the
// Helm release is called nats and the repository's helm-values directory is at hand.
func (f InstallFiles) NextSteps(dir string) string {
	c := f.Config
	secret := filepath.Join(dir, f.Secret.Name)
	values := filepath.Join(dir, f.HelmValues.Name)
	var b strings.Builder
	fmt.Fprintf(&b, "Wrote %s (private keys, mode 0600), %s and %s.\n",
		secret, filepath.Join(dir, f.ServerConfig.Name), values)
	fmt.Fprintf(&b, "  service user  %s\n  issuer        %s\n  xkey          %s\n", c.ServiceUser, c.Issuer, c.XKey)
	for _, old := range f.OldIssuers {
		fmt.Fprintf(&b, "  old issuer    %s (kept until the rotation is finished)\n", old)
	}
	apply := fmt.Sprintf("kubectl apply --server-side -f %s", secret)
	// --reuse-values keeps the release's own values; Helm merges maps across them and the -f
	// files, later winning, and replaces lists.
	upgrade := fmt.Sprintf("helm upgrade nats nats/nats -n %s --reuse-values -f helm-values/callout-values.yaml -f %s", f.Namespace, values)
	if f.Rotated {
		upgrade = fmt.Sprintf("helm upgrade nats nats/nats -n %s --reuse-values -f %s", f.Namespace, values)
	}
	switch {
	case f.Rotated:
		fmt.Fprintf(&b, "Issuer rotation, step 1 of 2:\n"+
			"  1. %s\n"+
			"     and wait until every sidecar logs \"signing keys reloaded\" with both issuers (kubelet takes up to a minute or two).\n"+
			"  2. %s\n"+
			"  3. kubectl rollout restart statefulset/nats -n %s && kubectl rollout status statefulset/nats -n %[3]s\n"+
			"     (nats-server cannot reload auth_callout; each server picks up the new issuer when it restarts,\n"+
			"     and the sidecars answer old and new servers alike meanwhile).\n"+
			"Then finish it: run init again with --finish-rotation and apply the Secret, which drops the old issuer.\n",
			apply, upgrade, f.Namespace)
	case f.Finished:
		fmt.Fprintf(&b, "Issuer rotation, step 2 of 2: once every NATS pod runs with issuer %s,\n  %s\n", c.Issuer, apply)
	default:
		fmt.Fprintf(&b, "Next:\n  1. %s\n  2. %s\n", apply, upgrade)
	}
	if f.SecretName != DefaultSecretName {
		fmt.Fprintf(&b, "The Secret is called %s: set the sidecar volume's secretName in callout-values.yaml to match.\n", f.SecretName)
	}
	if c.TargetAccounts[0] != DefaultTargetAccount {
		fmt.Fprintf(&b, "Workloads go to %s: set NATS_ACCOUNT in callout-values.yaml to match.\n", c.TargetAccounts[0])
	}
	return b.String()
}
