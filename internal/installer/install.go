package installer

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"
	"sigs.k8s.io/yaml"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/atomicfile"
)

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
	TenantAccounts []string
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
	// AddedSystemUser is set when an existing Secret got the system account user it lacked
	// (written before live revocation); nothing else changed.
	AddedSystemUser bool
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
	var err error
	if opts.ExistingSecret == nil {
		if opts.Rotate || opts.FinishRotation {
			return out, ErrNoSecret
		}
		if seeds, err = newSeeds(); err != nil {
			return out, err
		}
	} else if seeds, err = existingSeeds(&opts, &out); err != nil {
		return out, err
	}
	if opts.Namespace == "" {
		return out, errors.New("namespace is required: the namespace of the NATS release, where the Secret goes")
	}
	if opts.SecretName == "" {
		opts.SecretName = DefaultSecretName
	}
	return render(opts, seeds, out)
}

// existingSeeds reads opts.ExistingSecret, takes the namespace and name missing from opts from
// it, and returns the seeds to write: with the issuer rotated (out.Rotated) or the rotation
// finished (out.Finished). It records the Secret's checksum in out for WriteDir.
func existingSeeds(opts *InstallOptions, out *InstallFiles) (Seeds, error) {
	ns, name, existing, err := ParseSecretManifest(opts.ExistingSecret)
	if err != nil {
		return Seeds{}, fmt.Errorf("existing Secret: %w", err)
	}
	if opts.Namespace == "" {
		opts.Namespace = ns
	}
	if opts.SecretName == "" {
		opts.SecretName = name
	}
	if ns != "" && ns != opts.Namespace || name != "" && name != opts.SecretName {
		return Seeds{}, fmt.Errorf("the existing Secret is %s/%s, not %s/%s: keys are rotated in the Secret they live in", ns, name, opts.Namespace, opts.SecretName)
	}
	ep, err := existing.public()
	if err != nil {
		return Seeds{}, fmt.Errorf("existing Secret: %w", err)
	}
	current := ep.issuers[0]
	var seeds Seeds
	switch {
	case opts.Rotate && len(existing.Issuers) > 1:
		return Seeds{}, fmt.Errorf("%w: %s holds %d issuer keys; once every NATS server runs with issuer %s, finish it first",
			ErrRotationInProgress, SecretKeyIssuer, len(existing.Issuers), current)
	case opts.Rotate:
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return Seeds{}, err
		}
		fresh, err := kp.Seed()
		if err != nil {
			return Seeds{}, err
		}
		seeds = Seeds{Service: existing.Service, Issuers: [][]byte{fresh, existing.Issuers[0]}, XKey: existing.XKey, System: existing.System}
		out.Rotated = true
	case opts.FinishRotation && len(existing.Issuers) == 1:
		return Seeds{}, fmt.Errorf("%w: %s holds only issuer %s", ErrNoRotation, SecretKeyIssuer, current)
	case opts.FinishRotation:
		seeds = Seeds{Service: existing.Service, Issuers: existing.Issuers[:1], XKey: existing.XKey, System: existing.System}
		out.Finished = true
	case existing.System == nil:
		// Written before live revocation: adding its user replaces no key.
		seeds = existing
		out.AddedSystemUser = true
	default:
		return Seeds{}, fmt.Errorf("%w (issuer %s): keys are never replaced silently; rotate the issuer key deliberately (--rotate) or write to another directory", ErrSecretExists, current)
	}
	if seeds.System == nil {
		if seeds.System, err = newSystemSeed(); err != nil {
			return Seeds{}, err
		}
		out.AddedSystemUser = true
	}
	sum := sha256.Sum256(opts.ExistingSecret)
	out.replaces = &sum
	return seeds, nil
}

// render fills in out's server config and files for seeds; opts has its namespace and Secret
// name set.
func render(opts InstallOptions, seeds Seeds, out InstallFiles) (InstallFiles, error) {
	pub, err := seeds.public()
	if err != nil {
		return out, err
	}
	out.Config = ServerConfig{
		ServiceUser: pub.service, Issuer: pub.issuers[0], XKey: pub.xkey,
		CalloutAccount: opts.CalloutAccount, TargetAccounts: opts.TargetAccounts, TenantAccounts: opts.TenantAccounts, SystemAccount: opts.SystemAccount,
		JetStream: opts.JetStream, BypassUsers: slices.Clone(opts.BypassUsers),
	}.withDefaults()
	// Live revocation's user: in the system account, and past the callout like the others.
	out.Config.BypassUsers = append(out.Config.BypassUsers, BypassUser{Account: out.Config.SystemAccount, Nkey: pub.system})
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
		if err := atomicfile.WriteFile(filepath.Join(dir, file.Name), file.Data, file.Mode); err != nil {
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
	if sys := c.BypassUsers[len(c.BypassUsers)-1]; sys.Account == c.SystemAccount {
		fmt.Fprintf(&b, "  system user   %s (live revocation)\n", sys.Nkey)
	}
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
	case f.AddedSystemUser:
		fmt.Fprintf(&b, "Added a system account user for live revocation (%s in the Secret); every other key is kept.\n"+
			"  1. %s\n  2. %s\n  3. kubectl rollout restart statefulset/nats -n %s (nats-server cannot reload auth_users)\n",
			SecretKeySystem, apply, upgrade, f.Namespace)
	default:
		fmt.Fprintf(&b, "Next:\n  1. %s\n  2. %s\n", apply, upgrade)
	}
	if f.SecretName != DefaultSecretName {
		fmt.Fprintf(&b, "The Secret is called %s: set the sidecar volume's secretName in callout-values.yaml to match.\n", f.SecretName)
	}
	if c.TargetAccounts[0] != DefaultTargetAccount {
		fmt.Fprintf(&b, "Workloads go to %s: set NATS_ACCOUNT in callout-values.yaml to match.\n", c.TargetAccounts[0])
	}
	if len(c.TenantAccounts) > 0 {
		fmt.Fprintf(&b, "Tenant accounts: set NATS_ALLOWED_ACCOUNTS=%s in callout-values.yaml and label each tenant's namespace nats.io/account=<account>.\n",
			strings.Join(c.TenantAccounts, ","))
	}
	return b.String()
}
