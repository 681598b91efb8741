package installer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"sigs.k8s.io/yaml"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/installer"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// pathTokenVerifier accepts tokens of the form "namespace/name".
type pathTokenVerifier struct{}

func (pathTokenVerifier) Verify(_ context.Context, token string) (kube.Identity, error) {
	ns, name, ok := strings.Cut(token, "/")
	if !ok {
		return kube.Identity{}, kube.ErrMalformedToken
	}
	return kube.Identity{Namespace: ns, Name: name, UID: "uid-" + name, Expiry: time.Now().Add(time.Hour)}, nil
}

// defaultPolicySource gives every ServiceAccount the built-in default permissions.
type defaultPolicySource struct{}

func (defaultPolicySource) Policy(id kube.Identity) (kube.Policy, error) {
	return kube.ParsePolicy(kube.PolicyDefaults{}, id.Namespace, id.Name, nil)
}

// runInstalledSidecar runs the callout service against url with the Secret's seeds, the way the
// sidecar reads them from its mounted files.
func runInstalledSidecar(t *testing.T, url string, secret []byte) {
	t.Helper()
	_, _, seeds, err := installer.ParseSecretManifest(secret)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := callout.ParseCredentials(seeds.Service)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := callout.ParseSigningKeys(bytes.Join(seeds.Issuers, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	xkey, err := callout.ParseXKey(seeds.XKey)
	if err != nil {
		t.Fatal(err)
	}
	h, err := callout.NewHandler(callout.HandlerConfig{
		Verifier: pathTokenVerifier{}, Policies: defaultPolicySource{}, Account: installer.DefaultTargetAccount,
		SigningKeys: func() *callout.KeyRing { return ring }, XKey: func() *callout.XKey { return xkey },
	})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := callout.NewService(callout.ServiceConfig{
		URL: url, Credentials: func() *callout.Credentials { return creds }, Handler: h, ReconnectWait: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := svc.Run(ctx); err != nil {
			t.Errorf("service: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	testsupport.WaitFor(t, "service subscribed", 10*time.Second, func() bool { return svc.Ready() == nil })
}

// loginAccountOf connects with a ServiceAccount token and returns the account it landed in.
func loginAccountOf(t *testing.T, s *server.Server, token string) string {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Token(token), nats.MaxReconnects(0), nats.Timeout(5*time.Second), nats.Name(token))
	if err != nil {
		t.Fatalf("%s cannot log in: %v", token, err)
	}
	defer nc.Close()
	connz, err := s.Connz(&server.ConnzOptions{Username: true}) // accounts are shown with auth info
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range connz.Conns {
		if ci.Name == token {
			return ci.Account
		}
	}
	t.Fatalf("%s not in connz", token)
	return ""
}

func decodeSecretData(t *testing.T, manifest []byte) map[string]string {
	t.Helper()
	var m struct {
		Metadata struct{ Namespace, Name string }
		Data     map[string]string
	}
	if err := yaml.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{"namespace": m.Metadata.Namespace, "name": m.Metadata.Name}
	for k, v := range m.Data {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatalf("data.%s is not base64: %v", k, err)
		}
		out[k] = string(b)
	}
	return out
}

// TestGenerateInstall follows an install and an issuer rotation end to end: the generated
// config runs a real nats-server whose callouts the service answers with the Secret's keys.
func TestGenerateInstall(t *testing.T) {
	first, err := installer.GenerateInstall(installer.InstallOptions{Namespace: "nats"})
	if err != nil {
		t.Fatal(err)
	}

	// The three files agree with each other.
	data := decodeSecretData(t, first.Secret.Data)
	if data["namespace"] != "nats" || data["name"] != installer.DefaultSecretName {
		t.Errorf("Secret is %s/%s, want nats/%s", data["namespace"], data["name"], installer.DefaultSecretName)
	}
	creds, err := callout.ParseCredentials([]byte(data[installer.SecretKeyService]))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := callout.ParseSigningKeys([]byte(data[installer.SecretKeyIssuer]))
	if err != nil {
		t.Fatal(err)
	}
	xkey, err := callout.ParseXKey([]byte(data[installer.SecretKeyXKey]))
	if err != nil {
		t.Fatal(err)
	}
	system, err := callout.ParseCredentials([]byte(data[installer.SecretKeySystem]))
	if err != nil {
		t.Fatal(err)
	}
	got := summarizeCallout(t, processConfigText(t, first.ServerConfig.Name, first.ServerConfig.Data))
	want := parsedCallout{
		Issuer: ring.PublicKeys()[0], Account: "AUTH", XKey: xkey.PublicKey(), System: "SYS",
		AuthUsers: slices.Sorted(slices.Values([]string{creds.PublicKey(), system.PublicKey()})),
		Users:     map[string]string{creds.PublicKey(): "AUTH", system.PublicKey(): "SYS"},
		Accounts:  []string{"APP", "AUTH", "SYS"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("server config does not match the Secret:\n got %+v\nwant %+v", got, want)
	}
	if len(ring.PublicKeys()) != 1 || len(first.OldIssuers) != 0 {
		t.Errorf("a fresh install holds issuers %v (old %v), want one", ring.PublicKeys(), first.OldIssuers)
	}
	var values struct {
		Config struct {
			Merge map[string]any
		}
	}
	if err := yaml.Unmarshal(first.HelmValues.Data, &values); err != nil {
		t.Fatal(err)
	}
	merge, err := first.Config.HelmConfigMerge()
	if err != nil {
		t.Fatal(err)
	}
	asJSON := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if asJSON(values.Config.Merge) != asJSON(merge) {
		t.Errorf("helm values config.merge = %s, want %s", asJSON(values.Config.Merge), asJSON(merge))
	}
	for _, f := range []installer.InstallFile{first.ServerConfig, first.HelmValues} {
		for _, s := range [][]byte{[]byte(data[installer.SecretKeyService]), []byte(data[installer.SecretKeyIssuer]), []byte(data[installer.SecretKeyXKey])} {
			if bytes.Contains(f.Data, bytes.TrimSpace(s)) {
				t.Errorf("%s contains a seed", f.Name)
			}
		}
	}

	// Install: the generated config and Secret work together.
	oldServer, _ := testsupport.StartNATS(t, string(first.ServerConfig.Data))
	runInstalledSidecar(t, oldServer.ClientURL(), first.Secret.Data)
	if acc := loginAccountOf(t, oldServer, "team-a/app"); acc != "APP" {
		t.Errorf("workload landed in %s, want APP", acc)
	}

	// Re-running without asking for a rotation changes nothing.
	if _, err := installer.GenerateInstall(installer.InstallOptions{Namespace: "nats", ExistingSecret: first.Secret.Data}); !errors.Is(err, installer.ErrSecretExists) {
		t.Fatalf("re-run without rotate = %v, want ErrSecretExists", err)
	}
	if _, err := installer.GenerateInstall(installer.InstallOptions{ExistingSecret: first.Secret.Data, FinishRotation: true}); !errors.Is(err, installer.ErrNoRotation) {
		t.Errorf("finish without a rotation = %v, want ErrNoRotation", err)
	}

	// Rotate: new issuer first, old one kept; service user and xkey unchanged.
	rotated, err := installer.GenerateInstall(installer.InstallOptions{ExistingSecret: first.Secret.Data, Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	rdata := decodeSecretData(t, rotated.Secret.Data)
	rring, err := callout.ParseSigningKeys([]byte(rdata[installer.SecretKeyIssuer]))
	if err != nil {
		t.Fatal(err)
	}
	oldIssuer := first.Config.Issuer
	if ks := rring.PublicKeys(); len(ks) != 2 || ks[1] != oldIssuer || ks[0] == oldIssuer || ks[0] != rotated.Config.Issuer {
		t.Errorf("rotated issuers = %v, want [new, %s] with the config naming the new one (%s)", ks, oldIssuer, rotated.Config.Issuer)
	}
	if !slices.Equal(rotated.OldIssuers, []string{oldIssuer}) || !rotated.Rotated {
		t.Errorf("rotation reports old issuers %v (rotated %v)", rotated.OldIssuers, rotated.Rotated)
	}
	for _, k := range []string{installer.SecretKeyService, installer.SecretKeyXKey, "namespace", "name"} {
		if rdata[k] != data[k] {
			t.Errorf("rotation changed %s", k)
		}
	}
	if rotated.Config.ServiceUser != first.Config.ServiceUser || rotated.Config.XKey != first.Config.XKey {
		t.Error("rotation changed the service user or the xkey in the server config")
	}
	if _, err := installer.GenerateInstall(installer.InstallOptions{ExistingSecret: rotated.Secret.Data, Rotate: true}); !errors.Is(err, installer.ErrRotationInProgress) {
		t.Errorf("second rotation before finishing = %v, want ErrRotationInProgress", err)
	}

	// During the rollout, sidecars with the rotated Secret answer servers with the old config
	// and servers with the new config alike.
	newServer, _ := testsupport.StartNATS(t, string(rotated.ServerConfig.Data))
	runInstalledSidecar(t, oldServer.ClientURL(), rotated.Secret.Data)
	runInstalledSidecar(t, newServer.ClientURL(), rotated.Secret.Data)
	if acc := loginAccountOf(t, newServer, "team-b/app"); acc != "APP" {
		t.Errorf("workload on a server with the new issuer landed in %s, want APP", acc)
	}
	if acc := loginAccountOf(t, oldServer, "team-c/app"); acc != "APP" {
		t.Errorf("workload on a server with the old issuer landed in %s, want APP", acc)
	}

	// Finish: only the new issuer is left; the server config does not change.
	finished, err := installer.GenerateInstall(installer.InstallOptions{ExistingSecret: rotated.Secret.Data, FinishRotation: true})
	if err != nil {
		t.Fatal(err)
	}
	fring, err := callout.ParseSigningKeys([]byte(decodeSecretData(t, finished.Secret.Data)[installer.SecretKeyIssuer]))
	if err != nil {
		t.Fatal(err)
	}
	if ks := fring.PublicKeys(); !slices.Equal(ks, []string{rotated.Config.Issuer}) {
		t.Errorf("finished issuers = %v, want only %s", ks, rotated.Config.Issuer)
	}
	if !bytes.Equal(finished.ServerConfig.Data, rotated.ServerConfig.Data) || !bytes.Equal(finished.HelmValues.Data, rotated.HelmValues.Data) {
		t.Error("finishing a rotation changed the server config")
	}
}

func TestGenerateInstallRefusals(t *testing.T) {
	first, err := installer.GenerateInstall(installer.InstallOptions{Namespace: "nats", SecretName: "keys"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts installer.InstallOptions
		want error  // errors.Is, or nil to check the message
		msg  string // in the error
	}{
		{"no namespace", installer.InstallOptions{}, nil, "namespace is required"},
		{"bad namespace", installer.InstallOptions{Namespace: "Not_A_Namespace"}, nil, "namespace"},
		{"rotate without a Secret", installer.InstallOptions{Namespace: "nats", Rotate: true}, installer.ErrNoSecret, ""},
		{"rotate and finish at once", installer.InstallOptions{ExistingSecret: first.Secret.Data, Rotate: true, FinishRotation: true}, nil, "one at a time"},
		{"rotate in another namespace", installer.InstallOptions{Namespace: "other", ExistingSecret: first.Secret.Data, Rotate: true}, nil, "nats/keys, not other/keys"},
		{"rotate under another name", installer.InstallOptions{SecretName: "other", ExistingSecret: first.Secret.Data, Rotate: true}, nil, "not nats/other"},
		{"not a Secret", installer.InstallOptions{ExistingSecret: []byte("kind: ConfigMap\napiVersion: v1\n"), Rotate: true}, nil, "not a Secret manifest"},
		{"bad server config", installer.InstallOptions{Namespace: "nats", TargetAccounts: []string{"SYS"}}, installer.ErrInvalidServerConfig, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := installer.GenerateInstall(tt.opts)
			switch {
			case err == nil:
				t.Fatal("GenerateInstall succeeded")
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Errorf("GenerateInstall = %v, want %v", err, tt.want)
			case !strings.Contains(err.Error(), tt.msg):
				t.Errorf("GenerateInstall = %q, want it to say %q", err, tt.msg)
			}
		})
	}
}

func TestInstallFilesWriteDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	first, err := installer.GenerateInstall(installer.InstallOptions{Namespace: "nats"})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range first.Files() {
		st, err := os.Stat(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != f.Mode {
			t.Errorf("%s has mode %v, want %v", f.Name, st.Mode().Perm(), f.Mode)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, installer.InstallSecretFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("the Secret file is readable by others: %v", st.Mode().Perm())
	}
	secretPath := filepath.Join(dir, installer.InstallSecretFile)
	written, err := os.ReadFile(secretPath)
	if err != nil {
		t.Fatal(err)
	}

	// A second fresh run must not overwrite the keys, even if the caller forgot to pass them.
	second, err := installer.GenerateInstall(installer.InstallOptions{Namespace: "nats"})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.WriteDir(dir); !errors.Is(err, installer.ErrSecretExists) {
		t.Fatalf("WriteDir over existing keys = %v, want ErrSecretExists", err)
	}
	if now, _ := os.ReadFile(secretPath); !bytes.Equal(now, written) {
		t.Fatal("the keys were overwritten")
	}

	// A rotation started from the file replaces it, unless it changed in between.
	rotated, err := installer.GenerateInstall(installer.InstallOptions{ExistingSecret: written, Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretPath, append(written, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rotated.WriteDir(dir); err == nil || !strings.Contains(err.Error(), "changed since it was read") {
		t.Errorf("WriteDir over a changed file = %v", err)
	}
	if err := os.WriteFile(secretPath, written, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rotated.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(secretPath); !bytes.Equal(now, rotated.Secret.Data) {
		t.Error("the rotated Secret was not written")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("output dir holds %d entries, want the 3 files (no temporary leftovers)", len(entries))
	}

	if steps := rotated.NextSteps(dir); !strings.Contains(steps, "rollout restart") || !strings.Contains(steps, "--finish-rotation") {
		t.Errorf("rotation next steps do not explain the rollout:\n%s", steps)
	}
	if steps := first.NextSteps(dir); !strings.Contains(steps, "kubectl apply --server-side -f "+secretPath) {
		t.Errorf("install next steps:\n%s", steps)
	}
}

// TestGenerateInstallAddsSystemUser checks that init run again with a Secret written before
// live revocation adds the system account user and keeps every other key, and that a Secret
// that has one is refused as before.
func TestGenerateInstallAddsSystemUser(t *testing.T) {
	first, err := installer.GenerateInstall(installer.InstallOptions{Namespace: "nats"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, seeds, err := installer.ParseSecretManifest(first.Secret.Data)
	if err != nil {
		t.Fatal(err)
	}
	seeds.System = nil
	old, err := installer.SecretManifest("nats", installer.DefaultSecretName, seeds)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(old), installer.SecretKeySystem) {
		t.Fatalf("a Secret without a system user still names %s", installer.SecretKeySystem)
	}
	again, err := installer.GenerateInstall(installer.InstallOptions{ExistingSecret: old})
	if err != nil {
		t.Fatalf("init with a Secret that lacks the system user: %v", err)
	}
	before, after := decodeSecretData(t, old), decodeSecretData(t, again.Secret.Data)
	for _, k := range []string{installer.SecretKeyService, installer.SecretKeyIssuer, installer.SecretKeyXKey} {
		if before[k] != after[k] {
			t.Errorf("%s changed", k)
		}
	}
	system, err := callout.ParseCredentials([]byte(after[installer.SecretKeySystem]))
	if err != nil {
		t.Fatalf("%s: %v", installer.SecretKeySystem, err)
	}
	if !again.AddedSystemUser || !strings.Contains(again.NextSteps("out"), "Added a system account user for live revocation") {
		t.Errorf("AddedSystemUser %v; next steps:\n%s", again.AddedSystemUser, again.NextSteps("out"))
	}
	got := summarizeCallout(t, processConfigText(t, again.ServerConfig.Name, again.ServerConfig.Data))
	if got.Users[system.PublicKey()] != "SYS" || !slices.Contains(got.AuthUsers, system.PublicKey()) {
		t.Errorf("server config %+v lacks the system user %s in SYS and auth_users", got, system.PublicKey())
	}
	if _, err := installer.GenerateInstall(installer.InstallOptions{ExistingSecret: again.Secret.Data}); !errors.Is(err, installer.ErrSecretExists) {
		t.Errorf("init with a complete Secret: %v, want %v", err, installer.ErrSecretExists)
	}
}

func TestGenerateInstallTenantAccounts(t *testing.T) {
	c, err := installer.ParseInit([]string{"--namespace", "nats", "--tenant-accounts", "TEAM_A, TEAM_B"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	out, err := installer.GenerateInstall(c.Options)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []installer.InstallFile{out.ServerConfig, out.HelmValues} {
		for _, want := range []string{"TEAM_A", "TEAM_B", "allowed_accounts"} {
			if !strings.Contains(string(f.Data), want) {
				t.Errorf("%s lacks %q:\n%s", f.Name, want, f.Data)
			}
		}
	}
	if steps := out.NextSteps("dir"); !strings.Contains(steps, "NATS_ALLOWED_ACCOUNTS=TEAM_A,TEAM_B") {
		t.Errorf("next steps do not say to set NATS_ALLOWED_ACCOUNTS:\n%s", steps)
	}
}
