package installer

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nkeys"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
)

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
	// SecretKeySystem holds the seed of a system account user (NATS_SYSTEM_CREDS_FILE), which
	// live revocation logs in as.
	SecretKeySystem = "system.nk"
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
	// System is the user seed (SU...) of the system account user live revocation logs in as.
	// A Secret written before live revocation has none (nil).
	System []byte
}

// seedPublic is the public side of Seeds, checked key type by key type.
type seedPublic struct {
	service string
	issuers []string
	xkey    string
	system  string // "" without a system user
}

func (s Seeds) public() (seedPublic, error) {
	var p seedPublic
	creds, err := callout.ParseCredentials(s.Service)
	if err != nil {
		return p, fmt.Errorf("%s: %w", SecretKeyService, err)
	}
	p.service = creds.PublicKey()
	if len(s.Issuers) == 0 {
		return p, fmt.Errorf("%s: no issuer account seed", SecretKeyIssuer)
	}
	ring, err := callout.ParseSigningKeys(bytes.Join(s.Issuers, []byte("\n")))
	if err != nil {
		return p, fmt.Errorf("%s: %w", SecretKeyIssuer, err)
	}
	if p.issuers = ring.PublicKeys(); len(p.issuers) != len(s.Issuers) {
		return p, fmt.Errorf("%s: %d seeds given but %d distinct account keys found (one seed per entry, no duplicates)", SecretKeyIssuer, len(s.Issuers), len(p.issuers))
	}
	x, err := callout.ParseXKey(s.XKey)
	if err != nil {
		return p, fmt.Errorf("%s: %w", SecretKeyXKey, err)
	}
	p.xkey = x.PublicKey()
	if s.System != nil {
		sys, err := callout.ParseCredentials(s.System)
		if err != nil {
			return p, fmt.Errorf("%s: %w", SecretKeySystem, err)
		}
		if p.system = sys.PublicKey(); p.system == p.service {
			return p, fmt.Errorf("%s: the system account user must not be the service's own user", SecretKeySystem)
		}
	}
	return p, nil
}

// LogValue shows public keys only.
func (s Seeds) LogValue() slog.Value {
	p, err := s.public()
	if err != nil {
		return slog.StringValue("invalid seeds")
	}
	return slog.GroupValue(slog.String("service", p.service), slog.Any("issuers", p.issuers), slog.String("xkey", p.xkey),
		slog.String("system", p.system))
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
	if p.system != "" {
		fmt.Fprintf(&b, "#   %-10s user seed of %s, a system account user (NATS_SYSTEM_CREDS_FILE: live revocation)\n", SecretKeySystem, p.system)
	}
	b.WriteString("apiVersion: v1\nkind: Secret\nmetadata:\n")
	fmt.Fprintf(&b, "  name: %s\n  namespace: %s\n", name, namespace)
	b.WriteString("  labels:\n    app.kubernetes.io/name: nats-k8s-oidc-callout\n    app.kubernetes.io/component: auth-callout\n")
	b.WriteString("type: Opaque\ndata:\n")
	fmt.Fprintf(&b, "  %s: %s\n", SecretKeyIssuer, b64(issuers))
	fmt.Fprintf(&b, "  %s: %s\n", SecretKeyService, b64(line(s.Service)))
	if p.system != "" {
		fmt.Fprintf(&b, "  %s: %s\n", SecretKeySystem, b64(line(s.System)))
	}
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
	if _, err := get(SecretKeySystem); err == nil {
		s.System, _ = get(SecretKeySystem)
		s.System = bytes.TrimSpace(s.System)
	}
	s.Service, s.XKey = bytes.TrimSpace(s.Service), bytes.TrimSpace(s.XKey)
	if _, err := s.public(); err != nil {
		return "", "", Seeds{}, fmt.Errorf("secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return sec.Namespace, sec.Name, s, nil
}

// newSeeds generates a service user, an issuer account key, an xkey and a system account user.
func newSeeds() (Seeds, error) {
	var s Seeds
	for _, k := range []struct {
		create func() (nkeys.KeyPair, error)
		dst    *[]byte
	}{{nkeys.CreateUser, &s.Service}, {nkeys.CreateCurveKeys, &s.XKey}, {nkeys.CreateUser, &s.System}} {
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

// newSystemSeed generates the seed of a system account user.
func newSystemSeed() ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	return kp.Seed()
}
