//go:build e2e

// Package e2e is the end-to-end suite: the built service binary, run the way the sidecar runs,
// against a real kube-apiserver + etcd, real nats-server binaries, nats.go and the NATS CLI.
// Run it with scripts/e2e.sh (make e2e), which builds the tools, starts the control plane and
// sets the environment TestMain reads.
package e2e

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	authv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// suite is what every test shares: where the binaries are, the control plane, and the
// secrets minted so far (for the log check).
var suite *suiteEnv

type suiteEnv struct {
	serviceBin string // the service under test
	floorBin   string // a callout doing the protocol's own work only (e2e/floor), for TestLoad
	natsServer string // nats-server binary
	natsCLI    string // nats (NATS CLI) binary
	kubectl    string
	kubeconfig string // admin kubeconfig
	apiURL     string
	issuer     string
	caFile     string
	workDir    string // per-test directories with every process's log
	pidDir     string // PID records scripts/e2e.sh stops if a test could not

	kube  kubernetes.Interface
	saKey *rsa.PrivateKey // signs the cluster's ServiceAccount tokens
	kid   string          // the key id the API server puts in its tokens

	// serviceKubeconfig is the kubeconfig the service runs with: the API server's CA and the
	// token file of the nats/nats-k8s-oidc-callout ServiceAccount.
	serviceKubeconfig string

	// observerToken belongs to a ServiceAccount allowed to publish and subscribe to `>`: the
	// tests' witness of what is delivered.
	observerToken string

	secretsMu sync.Mutex
	secrets   map[string]string // secret value -> what it is
}

// required are the variables scripts/e2e.sh provides (most from cluster-up.sh's env file).
var required = []string{
	"E2E_BIN", "E2E_SERVICE_BIN", "E2E_FLOOR_BIN", "E2E_WORK_DIR",
	"KUBECONFIG", "KUBECTL", "KUBE_API_URL", "KUBE_ISSUER", "KUBE_CA_FILE", "KUBE_SA_KEY",
}

func TestMain(m *testing.M) {
	s, err := loadSuite()
	if err != nil {
		// Never skip: a suite that silently runs nothing looks green in CI.
		fmt.Fprintf(os.Stderr, "FAIL e2e setup: %v\nRun the suite with scripts/e2e.sh (make e2e): it builds the tools and the service, starts the control plane and sets %s.\n",
			err, strings.Join(required, ", "))
		os.Exit(2)
	}
	suite = s
	os.Exit(m.Run())
}

func loadSuite() (*suiteEnv, error) {
	var missing []string
	get := func(k string) string {
		v := os.Getenv(k)
		if v == "" {
			missing = append(missing, k)
		}
		return v
	}
	vals := map[string]string{}
	for _, k := range required {
		vals[k] = get(k)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("environment variables not set: %s", strings.Join(missing, ", "))
	}
	s := &suiteEnv{
		serviceBin: vals["E2E_SERVICE_BIN"],
		floorBin:   vals["E2E_FLOOR_BIN"],
		natsServer: filepath.Join(vals["E2E_BIN"], "nats-server"),
		natsCLI:    filepath.Join(vals["E2E_BIN"], "nats"),
		kubectl:    vals["KUBECTL"],
		kubeconfig: vals["KUBECONFIG"],
		apiURL:     vals["KUBE_API_URL"],
		issuer:     vals["KUBE_ISSUER"],
		caFile:     vals["KUBE_CA_FILE"],
		workDir:    vals["E2E_WORK_DIR"],
		secrets:    map[string]string{},
	}
	s.pidDir = filepath.Join(s.workDir, "pids")
	for _, b := range []*string{&s.serviceBin, &s.natsServer, &s.natsCLI, &s.kubectl} {
		abs, err := filepath.Abs(*b)
		if err == nil {
			abs, err = filepath.EvalSymlinks(abs)
		}
		if err != nil {
			return nil, fmt.Errorf("binary %s: %w", *b, err)
		}
		fi, err := os.Stat(abs)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("binary %s is missing or not executable (scripts/build-tools.sh builds the tools)", abs)
		}
		*b = abs
	}
	for _, f := range []string{s.kubeconfig, s.caFile, vals["KUBE_SA_KEY"]} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(s.pidDir, 0o755); err != nil {
		return nil, err
	}

	keyPEM, err := os.ReadFile(vals["KUBE_SA_KEY"])
	if err != nil {
		return nil, err
	}
	if s.saKey, err = jwt.ParseRSAPrivateKeyFromPEM(keyPEM); err != nil {
		return nil, fmt.Errorf("KUBE_SA_KEY: %w", err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", s.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("KUBECONFIG: %w", err)
	}
	if s.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if s.kid, err = apiServerKID(ctx, s.kube, &s.saKey.PublicKey); err != nil {
		return nil, err
	}
	if err := s.setUpServiceIdentity(ctx); err != nil {
		return nil, fmt.Errorf("the service's ServiceAccount and kubeconfig: %w", err)
	}
	if err := s.setUpObserver(ctx); err != nil {
		return nil, fmt.Errorf("observer ServiceAccount: %w", err)
	}
	return s, nil
}

// apiServerKID reads the JWKS the API server publishes and returns the key id of the key that
// signs its tokens, so that forged tokens look exactly like real ones.
func apiServerKID(ctx context.Context, kube kubernetes.Interface, pub *rsa.PublicKey) (string, error) {
	raw, err := kube.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("read the API server's JWKS: %w", err)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
			Kty string `json:"kty"`
			N   string `json:"n"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return "", fmt.Errorf("JWKS: %w", err)
	}
	for _, k := range set.Keys {
		n, err := base64.RawURLEncoding.DecodeString(k.N)
		if k.Kty == "RSA" && err == nil && new(big.Int).SetBytes(n).Cmp(pub.N) == 0 {
			return k.Kid, nil
		}
	}
	return "", errors.New("the API server's JWKS has no key matching KUBE_SA_KEY")
}

// setUpServiceIdentity applies the service's RBAC and writes the kubeconfig it runs with: a
// ServiceAccount token in a file, as in a pod (client-go re-reads token files).
func (s *suiteEnv) setUpServiceIdentity(ctx context.Context) error {
	rbac, err := filepath.Abs(filepath.Join("..", "testdata", "e2e", "service-rbac.yaml"))
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, s.kubectl, "--kubeconfig", s.kubeconfig, "apply", "-f", rbac).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl apply -f %s: %w\n%s", rbac, err, out)
	}
	// The RBAC of the Helm values, for this ServiceAccount.
	values, err := renderCalloutRBAC("nats", "nats-k8s-oidc-callout")
	if err != nil {
		return fmt.Errorf("RBAC of %s: %w", calloutValuesFile, err)
	}
	apply := exec.CommandContext(ctx, s.kubectl, "--kubeconfig", s.kubeconfig, "apply", "-f", "-")
	apply.Stdin = bytes.NewReader(values)
	if out, err := apply.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply the RBAC of %s: %w\n%s", calloutValuesFile, err, out)
	}
	// A token with the API server's own audience, like a pod's kube-api-access volume.
	tok, err := s.kube.CoreV1().ServiceAccounts("nats").CreateToken(ctx, "nats-k8s-oidc-callout", &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3 * 3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	s.noteSecret(tok.Status.Token, "the service's own ServiceAccount token")
	dir := filepath.Join(s.workDir, "service-identity")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(tok.Status.Token), 0o600); err != nil {
		return err
	}
	s.serviceKubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: nats-k8s-oidc-callout
  user:
    tokenFile: %s
contexts:
- name: e2e
  context:
    cluster: e2e
    user: nats-k8s-oidc-callout
    namespace: nats
current-context: e2e
`, s.apiURL, s.caFile, tokenFile)
	return os.WriteFile(s.serviceKubeconfig, []byte(kc), 0o600)
}

// setUpObserver creates the witness ServiceAccount every deployment lets publish and
// subscribe anywhere in the target account.
func (s *suiteEnv) setUpObserver(ctx context.Context) error {
	const ns, name = "e2e-observer", "observer"
	if err := createNamespace(ctx, s.kube, ns); err != nil {
		return err
	}
	if _, err := createServiceAccount(ctx, s.kube, ns, name, map[string]string{
		"nats.io/allowed-pub-subjects": ">",
		"nats.io/allowed-sub-subjects": ">",
	}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	tok, err := requestToken(ctx, s.kube, ns, name, "nats", 3*time.Hour)
	if err != nil {
		return err
	}
	s.noteSecret(tok, "observer token")
	s.observerToken = tok
	return nil
}

// noteSecret remembers a secret value so the log check can look for it.
func (s *suiteEnv) noteSecret(value, what string) {
	if len(value) < 8 {
		return
	}
	s.secretsMu.Lock()
	defer s.secretsMu.Unlock()
	s.secrets[value] = what
}

// knownSecrets returns every secret minted so far.
func (s *suiteEnv) knownSecrets() map[string]string {
	s.secretsMu.Lock()
	defer s.secretsMu.Unlock()
	out := make(map[string]string, len(s.secrets))
	for k, v := range s.secrets {
		out[k] = v
	}
	return out
}

func ptr[T any](v T) *T { return &v }
