package callout_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"sigs.k8s.io/yaml"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// publicKey creates a key pair with create and returns its public key.
func newPublicKey(t *testing.T, create func() (nkeys.KeyPair, error)) string {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return pub(t, kp)
}

func newValidServerConfig(t *testing.T) callout.ServerConfig {
	t.Helper()
	return callout.ServerConfig{
		ServiceUser: newPublicKey(t, nkeys.CreateUser),
		Issuer:      newPublicKey(t, nkeys.CreateAccount),
		XKey:        newPublicKey(t, nkeys.CreateCurveKeys),
	}
}

func TestServerConfigValidate(t *testing.T) {
	user := newPublicKey(t, nkeys.CreateUser)
	account := newPublicKey(t, nkeys.CreateAccount)
	accountKP, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accountSeed := string(seed(t, accountKP))

	tests := []struct {
		name   string
		change func(*callout.ServerConfig)
		want   string // in the error
	}{
		{"user key as issuer", func(c *callout.ServerConfig) { c.Issuer = user }, "not the service's user key"},
		{"seed as issuer", func(c *callout.ServerConfig) { c.Issuer = accountSeed }, "looks like a seed"},
		{"missing issuer", func(c *callout.ServerConfig) { c.Issuer = "" }, "an account public key (A...) is required"},
		{"account key as service user", func(c *callout.ServerConfig) { c.ServiceUser = account }, "this is an account public key; a user public key"},
		{"user key as xkey", func(c *callout.ServerConfig) { c.XKey = user }, "a curve public key (X...) is required"},
		{"garbage xkey", func(c *callout.ServerConfig) { c.XKey = "Xnope" }, "not a valid nkey"},
		{"system account as target", func(c *callout.ServerConfig) { c.TargetAccounts = []string{"APP", "SYS"} }, "workloads must never be placed there"},
		{"callout account as target", func(c *callout.ServerConfig) { c.TargetAccounts = []string{"AUTH"} }, "must hold only the service user"},
		{"duplicate target", func(c *callout.ServerConfig) { c.TargetAccounts = []string{"APP", "APP"} }, "listed twice"},
		{"callout account is system account", func(c *callout.ServerConfig) { c.CalloutAccount = "SYS" }, "must differ"},
		{"account name with a space", func(c *callout.ServerConfig) { c.TargetAccounts = []string{"MY APP"} }, "account names start with a letter"},
		{"account name $G", func(c *callout.ServerConfig) { c.CalloutAccount = "$G" }, "account names start with a letter"},
		{"bypass user in callout account", func(c *callout.ServerConfig) {
			c.BypassUsers = []callout.BypassUser{{Account: "AUTH", Nkey: user}}
		}, "must hold only the service user"},
		{"bypass user is the service user", func(c *callout.ServerConfig) {
			c.BypassUsers = []callout.BypassUser{{Account: "NACK", Nkey: c.ServiceUser}}
		}, "listed twice"},
		{"bypass user with an account key", func(c *callout.ServerConfig) {
			c.BypassUsers = []callout.BypassUser{{Account: "NACK", Nkey: account}}
		}, "a user public key (U...) is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newValidServerConfig(t)
			tt.change(&c)
			err := c.Validate()
			if !errors.Is(err, callout.ErrInvalidServerConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidServerConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %q, want it to say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), accountSeed) {
				t.Errorf("the error echoes a seed: %q", err)
			}
			if _, err := c.NATSConfig(); err == nil {
				t.Error("NATSConfig rendered an invalid config")
			}
			if _, err := c.HelmConfigMerge(); err == nil {
				t.Error("HelmConfigMerge rendered an invalid config")
			}
		})
	}
	if err := newValidServerConfig(t).Validate(); err != nil {
		t.Errorf("a valid config: %v", err)
	}
}

func TestParseBypassUser(t *testing.T) {
	user := newPublicKey(t, nkeys.CreateUser)
	got, err := callout.ParseBypassUser(" NACK = " + user)
	if err != nil || got != (callout.BypassUser{Account: "NACK", Nkey: user}) {
		t.Errorf("ParseBypassUser = %+v, %v", got, err)
	}
	for _, bad := range []string{user, "NACK=", "=" + user, "NACK=" + newPublicKey(t, nkeys.CreateAccount)} {
		if _, err := callout.ParseBypassUser(bad); !errors.Is(err, callout.ErrInvalidServerConfig) {
			t.Errorf("ParseBypassUser(%q) = %v, want ErrInvalidServerConfig", bad, err)
		}
	}
}

// processConfig writes conf to a file and parses it the way nats-server -c does.
func processConfigText(t *testing.T, name string, conf []byte) *server.Options {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the config: %v\n%s", err, conf)
	}
	return opts
}

// parsedCallout is what matters of a parsed config, comparable across renderings.
type parsedCallout struct {
	Issuer, Account, XKey, System string
	AuthUsers                     []string
	Users                         map[string]string // nkey -> account
	Accounts                      []string
}

func summarizeCallout(t *testing.T, o *server.Options) parsedCallout {
	t.Helper()
	if o.AuthCallout == nil {
		t.Fatal("no auth_callout in the parsed config")
	}
	s := parsedCallout{
		Issuer: o.AuthCallout.Issuer, Account: o.AuthCallout.Account, XKey: o.AuthCallout.XKey,
		System: o.SystemAccount, AuthUsers: slices.Sorted(slices.Values(o.AuthCallout.AuthUsers)),
		Users: map[string]string{},
	}
	for _, u := range o.Nkeys {
		s.Users[u.Nkey] = u.Account.Name
	}
	for _, a := range o.Accounts {
		s.Accounts = append(s.Accounts, a.Name)
	}
	slices.Sort(s.Accounts)
	return s
}

func TestServerConfigAcceptedByNATSServer(t *testing.T) {
	nack := newPublicKey(t, nkeys.CreateUser)
	admin := newPublicKey(t, nkeys.CreateUser)
	tests := []struct {
		name   string
		change func(*callout.ServerConfig)
	}{
		{"defaults", func(*callout.ServerConfig) {}},
		{"without xkey", func(c *callout.ServerConfig) { c.XKey = "" }},
		{"own names, jetstream, bypass users", func(c *callout.ServerConfig) {
			c.CalloutAccount, c.SystemAccount = "CALLOUT", "SYSTEM"
			c.TargetAccounts = []string{"ORDERS", "BILLING"}
			c.JetStream = true
			c.BypassUsers = []callout.BypassUser{{Account: "NACK", Nkey: nack}, {Account: "SYSTEM", Nkey: admin}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newValidServerConfig(t)
			tt.change(&c)
			text, err := c.NATSConfig()
			if err != nil {
				t.Fatal(err)
			}
			got := summarizeCallout(t, processConfigText(t, "nats.conf", text))

			calloutAccount, system := c.CalloutAccount, c.SystemAccount
			if calloutAccount == "" {
				calloutAccount, system = "AUTH", "SYS"
			}
			want := parsedCallout{
				Issuer: c.Issuer, Account: calloutAccount, XKey: c.XKey, System: system,
				AuthUsers: []string{c.ServiceUser}, Users: map[string]string{c.ServiceUser: calloutAccount},
			}
			for _, u := range c.BypassUsers {
				want.AuthUsers = append(want.AuthUsers, u.Nkey)
				want.Users[u.Nkey] = u.Account
			}
			slices.Sort(want.AuthUsers)
			targets := c.TargetAccounts
			if len(targets) == 0 {
				targets = []string{"APP"}
			}
			want.Accounts = append([]string{calloutAccount, system}, targets...)
			for _, u := range c.BypassUsers {
				if !slices.Contains(want.Accounts, u.Account) {
					want.Accounts = append(want.Accounts, u.Account)
				}
			}
			slices.Sort(want.Accounts)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parsed config:\n got %+v\nwant %+v\n%s", got, want, text)
			}

			// The chart renders config.merge as JSON into nats.conf: it must mean the same.
			merge, err := c.HelmConfigMerge()
			if err != nil {
				t.Fatal(err)
			}
			asJSON, err := json.Marshal(merge)
			if err != nil {
				t.Fatal(err)
			}
			fromJSON := summarizeCallout(t, processConfigText(t, "nats.json.conf", asJSON))
			if !reflect.DeepEqual(fromJSON, got) {
				t.Errorf("config.merge means something else than the config text:\nmerge %+v\n text %+v", fromJSON, got)
			}
		})
	}
}

// TestServerConfigRunsCallout starts nats-server from the rendered config: a client without
// credentials is handed to whoever answers in the callout account (here nobody, so it fails),
// the request is sealed to the xkey, and bypass users log in directly.
func TestServerConfigRunsCallout(t *testing.T) {
	svcKP, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	nackKP, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	xkp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	c := newValidServerConfig(t)
	c.ServiceUser, c.XKey = pub(t, svcKP), pub(t, xkp)
	c.JetStream = true
	c.BypassUsers = []callout.BypassUser{{Account: "NACK", Nkey: pub(t, nackKP)}}
	text, err := c.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := startServer(t, string(text))
	if got := s.SystemAccount().Name; got != "SYS" {
		t.Errorf("system account = %s, want SYS", got)
	}

	svc, err := nats.Connect(s.ClientURL(), nats.Nkey(c.ServiceUser, svcKP.Sign), nats.Name("svc"))
	if err != nil {
		t.Fatalf("the service user cannot log in: %v", err)
	}
	defer svc.Close()
	requests, err := svc.SubscribeSync(callout.Subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}

	nack, err := nats.Connect(s.ClientURL(), nats.Nkey(c.BypassUsers[0].Nkey, nackKP.Sign), nats.Name("nack"))
	if err != nil {
		t.Fatalf("the bypass user cannot log in without a callout answer: %v", err)
	}
	defer nack.Close()
	connz, err := s.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		t.Fatal(err)
	}
	accounts := map[string]string{}
	for _, ci := range connz.Conns {
		accounts[ci.Name] = ci.Account
	}
	if accounts["svc"] != "AUTH" || accounts["nack"] != "NACK" {
		t.Errorf("connection accounts = %v, want svc in AUTH, nack in NACK", accounts)
	}

	// Nobody answers, so the workload fails; what matters is that the request arrived.
	done := make(chan error, 1)
	go func() {
		nc, err := nats.Connect(s.ClientURL(), nats.Token("some-token"), nats.MaxReconnects(0), nats.Timeout(500*time.Millisecond))
		if err == nil {
			nc.Close()
		}
		done <- err
	}()
	msg, err := requests.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no callout request arrived: %v", err)
	}
	opened, err := xkp.Open(msg.Data, msg.Header.Get("Nats-Server-Xkey"))
	if err != nil {
		t.Fatalf("the callout request is not sealed to the xkey: %v", err)
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(opened))
	if err != nil {
		t.Fatal(err)
	}
	if req.Subject != c.Issuer {
		t.Errorf("the server expects issuer %s, want %s", req.Subject, c.Issuer)
	}
	if err := <-done; err == nil {
		t.Error("a client got in although nobody answered the callout")
	}
}

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
	_, _, seeds, err := callout.ParseSecretManifest(secret)
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
		Verifier: pathTokenVerifier{}, Policies: defaultPolicySource{}, Account: callout.DefaultTargetAccount,
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
	waitFor(t, "service subscribed", func() bool { return svc.Ready() == nil })
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
	first, err := callout.GenerateInstall(callout.InstallOptions{Namespace: "nats"})
	if err != nil {
		t.Fatal(err)
	}

	// The three files agree with each other.
	data := decodeSecretData(t, first.Secret.Data)
	if data["namespace"] != "nats" || data["name"] != callout.DefaultSecretName {
		t.Errorf("Secret is %s/%s, want nats/%s", data["namespace"], data["name"], callout.DefaultSecretName)
	}
	creds, err := callout.ParseCredentials([]byte(data[callout.SecretKeyService]))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := callout.ParseSigningKeys([]byte(data[callout.SecretKeyIssuer]))
	if err != nil {
		t.Fatal(err)
	}
	xkey, err := callout.ParseXKey([]byte(data[callout.SecretKeyXKey]))
	if err != nil {
		t.Fatal(err)
	}
	got := summarizeCallout(t, processConfigText(t, first.ServerConfig.Name, first.ServerConfig.Data))
	want := parsedCallout{
		Issuer: ring.PublicKeys()[0], Account: "AUTH", XKey: xkey.PublicKey(), System: "SYS",
		AuthUsers: []string{creds.PublicKey()}, Users: map[string]string{creds.PublicKey(): "AUTH"},
		Accounts: []string{"APP", "AUTH", "SYS"},
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
	for _, f := range []callout.InstallFile{first.ServerConfig, first.HelmValues} {
		for _, s := range [][]byte{[]byte(data[callout.SecretKeyService]), []byte(data[callout.SecretKeyIssuer]), []byte(data[callout.SecretKeyXKey])} {
			if bytes.Contains(f.Data, bytes.TrimSpace(s)) {
				t.Errorf("%s contains a seed", f.Name)
			}
		}
	}

	// Install: the generated config and Secret work together.
	oldServer, _ := startServer(t, string(first.ServerConfig.Data))
	runInstalledSidecar(t, oldServer.ClientURL(), first.Secret.Data)
	if acc := loginAccountOf(t, oldServer, "team-a/app"); acc != "APP" {
		t.Errorf("workload landed in %s, want APP", acc)
	}

	// Re-running without asking for a rotation changes nothing.
	if _, err := callout.GenerateInstall(callout.InstallOptions{Namespace: "nats", ExistingSecret: first.Secret.Data}); !errors.Is(err, callout.ErrSecretExists) {
		t.Fatalf("re-run without rotate = %v, want ErrSecretExists", err)
	}
	if _, err := callout.GenerateInstall(callout.InstallOptions{ExistingSecret: first.Secret.Data, FinishRotation: true}); !errors.Is(err, callout.ErrNoRotation) {
		t.Errorf("finish without a rotation = %v, want ErrNoRotation", err)
	}

	// Rotate: new issuer first, old one kept; service user and xkey unchanged.
	rotated, err := callout.GenerateInstall(callout.InstallOptions{ExistingSecret: first.Secret.Data, Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	rdata := decodeSecretData(t, rotated.Secret.Data)
	rring, err := callout.ParseSigningKeys([]byte(rdata[callout.SecretKeyIssuer]))
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
	for _, k := range []string{callout.SecretKeyService, callout.SecretKeyXKey, "namespace", "name"} {
		if rdata[k] != data[k] {
			t.Errorf("rotation changed %s", k)
		}
	}
	if rotated.Config.ServiceUser != first.Config.ServiceUser || rotated.Config.XKey != first.Config.XKey {
		t.Error("rotation changed the service user or the xkey in the server config")
	}
	if _, err := callout.GenerateInstall(callout.InstallOptions{ExistingSecret: rotated.Secret.Data, Rotate: true}); !errors.Is(err, callout.ErrRotationInProgress) {
		t.Errorf("second rotation before finishing = %v, want ErrRotationInProgress", err)
	}

	// During the rollout, sidecars with the rotated Secret answer servers with the old config
	// and servers with the new config alike.
	newServer, _ := startServer(t, string(rotated.ServerConfig.Data))
	runInstalledSidecar(t, oldServer.ClientURL(), rotated.Secret.Data)
	runInstalledSidecar(t, newServer.ClientURL(), rotated.Secret.Data)
	if acc := loginAccountOf(t, newServer, "team-b/app"); acc != "APP" {
		t.Errorf("workload on a server with the new issuer landed in %s, want APP", acc)
	}
	if acc := loginAccountOf(t, oldServer, "team-c/app"); acc != "APP" {
		t.Errorf("workload on a server with the old issuer landed in %s, want APP", acc)
	}

	// Finish: only the new issuer is left; the server config does not change.
	finished, err := callout.GenerateInstall(callout.InstallOptions{ExistingSecret: rotated.Secret.Data, FinishRotation: true})
	if err != nil {
		t.Fatal(err)
	}
	fring, err := callout.ParseSigningKeys([]byte(decodeSecretData(t, finished.Secret.Data)[callout.SecretKeyIssuer]))
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
	first, err := callout.GenerateInstall(callout.InstallOptions{Namespace: "nats", SecretName: "keys"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts callout.InstallOptions
		want error  // errors.Is, or nil to check the message
		msg  string // in the error
	}{
		{"no namespace", callout.InstallOptions{}, nil, "namespace is required"},
		{"bad namespace", callout.InstallOptions{Namespace: "Not_A_Namespace"}, nil, "namespace"},
		{"rotate without a Secret", callout.InstallOptions{Namespace: "nats", Rotate: true}, callout.ErrNoSecret, ""},
		{"rotate and finish at once", callout.InstallOptions{ExistingSecret: first.Secret.Data, Rotate: true, FinishRotation: true}, nil, "one at a time"},
		{"rotate in another namespace", callout.InstallOptions{Namespace: "other", ExistingSecret: first.Secret.Data, Rotate: true}, nil, "nats/keys, not other/keys"},
		{"rotate under another name", callout.InstallOptions{SecretName: "other", ExistingSecret: first.Secret.Data, Rotate: true}, nil, "not nats/other"},
		{"not a Secret", callout.InstallOptions{ExistingSecret: []byte("kind: ConfigMap\napiVersion: v1\n"), Rotate: true}, nil, "not a Secret manifest"},
		{"bad server config", callout.InstallOptions{Namespace: "nats", TargetAccounts: []string{"SYS"}}, callout.ErrInvalidServerConfig, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := callout.GenerateInstall(tt.opts)
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

func TestParseSecretManifest(t *testing.T) {
	first, err := callout.GenerateInstall(callout.InstallOptions{Namespace: "nats"})
	if err != nil {
		t.Fatal(err)
	}
	data := decodeSecretData(t, first.Secret.Data)
	// What `kubectl get secret -o yaml` prints, and a hand-written stringData manifest.
	fromCluster := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: nats-callout\n  namespace: nats\n" +
		"  resourceVersion: \"42\"\n  uid: 0e7f5c3a-2d0e-4a57-9b0e-0123456789ab\n  creationTimestamp: \"2026-01-02T03:04:05Z\"\ntype: Opaque\ndata:\n"
	stringData := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: nats-callout\n  namespace: nats\nstringData:\n"
	for _, k := range []string{callout.SecretKeyIssuer, callout.SecretKeyService, callout.SecretKeyXKey} {
		fromCluster += "  " + k + ": " + base64.StdEncoding.EncodeToString([]byte(data[k])) + "\n"
		stringData += "  " + k + ": |\n    " + strings.TrimSpace(data[k]) + "\n"
	}
	for name, manifest := range map[string]string{"generated": string(first.Secret.Data), "kubectl get": fromCluster, "stringData": stringData} {
		t.Run(name, func(t *testing.T) {
			ns, secretName, seeds, err := callout.ParseSecretManifest([]byte(manifest))
			if err != nil {
				t.Fatal(err)
			}
			if ns != "nats" || secretName != "nats-callout" {
				t.Errorf("Secret %s/%s", ns, secretName)
			}
			if got := strings.TrimSpace(string(seeds.Service)); got != strings.TrimSpace(data[callout.SecretKeyService]) {
				t.Error("service seed differs")
			}
			again, err := callout.SecretManifest(ns, secretName, seeds)
			if err != nil || !bytes.Equal(again, first.Secret.Data) {
				t.Errorf("re-rendered Secret differs (%v):\n%s", err, again)
			}
		})
	}

	// A seed of the wrong kind under a key is refused, and never echoed.
	userKP, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Replace(stringData, strings.TrimSpace(data[callout.SecretKeyIssuer]), string(seed(t, userKP)), 1)
	_, _, _, err = callout.ParseSecretManifest([]byte(wrong))
	if err == nil || !strings.Contains(err.Error(), "issuer.nk") || strings.Contains(err.Error(), string(seed(t, userKP))) {
		t.Errorf("issuer.nk with a user seed: %v", err)
	}
	missing := strings.Replace(stringData, "  xkey.nk:", "  other:", 1)
	if _, _, _, err := callout.ParseSecretManifest([]byte(missing)); err == nil || !strings.Contains(err.Error(), "no xkey.nk") {
		t.Errorf("Secret without xkey.nk: %v", err)
	}
}

func TestInstallFilesWriteDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	first, err := callout.GenerateInstall(callout.InstallOptions{Namespace: "nats"})
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
	if st, _ := os.Stat(filepath.Join(dir, callout.InstallSecretFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("the Secret file is readable by others: %v", st.Mode().Perm())
	}
	secretPath := filepath.Join(dir, callout.InstallSecretFile)
	written, err := os.ReadFile(secretPath)
	if err != nil {
		t.Fatal(err)
	}

	// A second fresh run must not overwrite the keys, even if the caller forgot to pass them.
	second, err := callout.GenerateInstall(callout.InstallOptions{Namespace: "nats"})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.WriteDir(dir); !errors.Is(err, callout.ErrSecretExists) {
		t.Fatalf("WriteDir over existing keys = %v, want ErrSecretExists", err)
	}
	if now, _ := os.ReadFile(secretPath); !bytes.Equal(now, written) {
		t.Fatal("the keys were overwritten")
	}

	// A rotation started from the file replaces it, unless it changed in between.
	rotated, err := callout.GenerateInstall(callout.InstallOptions{ExistingSecret: written, Rotate: true})
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
