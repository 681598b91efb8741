package installer_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/installer"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
)

// newPublicKey creates a key pair with create and returns its public key.
func newPublicKey(t *testing.T, create func() (nkeys.KeyPair, error)) string {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return testsupport.PublicKey(t, kp)
}

func newValidServerConfig(t *testing.T) installer.ServerConfig {
	t.Helper()
	return installer.ServerConfig{
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
	accountSeed := string(testsupport.Seed(t, accountKP))

	tests := []struct {
		name   string
		change func(*installer.ServerConfig)
		want   string // in the error
	}{
		{"user key as issuer", func(c *installer.ServerConfig) { c.Issuer = user }, "not the service's user key"},
		{"seed as issuer", func(c *installer.ServerConfig) { c.Issuer = accountSeed }, "looks like a seed"},
		{"missing issuer", func(c *installer.ServerConfig) { c.Issuer = "" }, "an account public key (A...) is required"},
		{"account key as service user", func(c *installer.ServerConfig) { c.ServiceUser = account }, "this is an account public key; a user public key"},
		{"user key as xkey", func(c *installer.ServerConfig) { c.XKey = user }, "a curve public key (X...) is required"},
		{"garbage xkey", func(c *installer.ServerConfig) { c.XKey = "Xnope" }, "not a valid nkey"},
		{"system account as target", func(c *installer.ServerConfig) { c.TargetAccounts = []string{"APP", "SYS"} }, "workloads must never be placed there"},
		{"callout account as target", func(c *installer.ServerConfig) { c.TargetAccounts = []string{"AUTH"} }, "must hold only the service user"},
		{"duplicate target", func(c *installer.ServerConfig) { c.TargetAccounts = []string{"APP", "APP"} }, "listed twice"},
		{"callout account is system account", func(c *installer.ServerConfig) { c.CalloutAccount = "SYS" }, "must differ"},
		{"account name with a space", func(c *installer.ServerConfig) { c.TargetAccounts = []string{"MY APP"} }, "account names start with a letter"},
		{"account name $G", func(c *installer.ServerConfig) { c.CalloutAccount = "$G" }, "account names start with a letter"},
		{"bypass user in callout account", func(c *installer.ServerConfig) {
			c.BypassUsers = []installer.BypassUser{{Account: "AUTH", Nkey: user}}
		}, "must hold only the service user"},
		{"bypass user is the service user", func(c *installer.ServerConfig) {
			c.BypassUsers = []installer.BypassUser{{Account: "NACK", Nkey: c.ServiceUser}}
		}, "listed twice"},
		{"bypass user with an account key", func(c *installer.ServerConfig) {
			c.BypassUsers = []installer.BypassUser{{Account: "NACK", Nkey: account}}
		}, "a user public key (U...) is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newValidServerConfig(t)
			tt.change(&c)
			err := c.Validate()
			if !errors.Is(err, installer.ErrInvalidServerConfig) {
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
	got, err := installer.ParseBypassUser(" NACK = " + user)
	if err != nil || got != (installer.BypassUser{Account: "NACK", Nkey: user}) {
		t.Errorf("ParseBypassUser = %+v, %v", got, err)
	}
	for _, bad := range []string{user, "NACK=", "=" + user, "NACK=" + newPublicKey(t, nkeys.CreateAccount)} {
		if _, err := installer.ParseBypassUser(bad); !errors.Is(err, installer.ErrInvalidServerConfig) {
			t.Errorf("ParseBypassUser(%q) = %v, want ErrInvalidServerConfig", bad, err)
		}
	}
}

// processConfigText writes conf to a file and parses it the way nats-server -c does.
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
		change func(*installer.ServerConfig)
	}{
		{"defaults", func(*installer.ServerConfig) {}},
		{"without xkey", func(c *installer.ServerConfig) { c.XKey = "" }},
		{"own names, jetstream, bypass users", func(c *installer.ServerConfig) {
			c.CalloutAccount, c.SystemAccount = "CALLOUT", "SYSTEM"
			c.TargetAccounts = []string{"ORDERS", "BILLING"}
			c.JetStream = true
			c.BypassUsers = []installer.BypassUser{{Account: "NACK", Nkey: nack}, {Account: "SYSTEM", Nkey: admin}}
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
	c.ServiceUser, c.XKey = testsupport.PublicKey(t, svcKP), testsupport.PublicKey(t, xkp)
	c.JetStream = true
	c.BypassUsers = []installer.BypassUser{{Account: "NACK", Nkey: testsupport.PublicKey(t, nackKP)}}
	text, err := c.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := testsupport.StartNATS(t, string(text))
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

func TestServerConfigTenantAccounts(t *testing.T) {
	c := newValidServerConfig(t)
	c.TenantAccounts = []string{"TEAM_A", "TEAM_B"}
	conf, err := c.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"  TEAM_A: {}\n", "  TEAM_B: {}\n", "allowed_accounts: [ APP, TEAM_A, TEAM_B ]"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	// nats-server itself reads it: allowed_accounts must name configured accounts.
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the config: %v\n%s", err, conf)
	}
	if got := opts.AuthCallout.AllowedAccounts; !slices.Equal(got, []string{"APP", "TEAM_A", "TEAM_B"}) {
		t.Errorf("nats-server reads allowed_accounts %v", got)
	}
	merge, err := c.HelmConfigMerge()
	if err != nil {
		t.Fatal(err)
	}
	ac := merge["authorization"].(map[string]any)["auth_callout"].(map[string]any)
	if got, _ := json.Marshal(ac["allowed_accounts"]); string(got) != `["APP","TEAM_A","TEAM_B"]` {
		t.Errorf("helm allowed_accounts = %s", got)
	}
	for _, bad := range [][]string{{"AUTH"}, {"SYS"}, {"APP"}, {"TEAM_A", "TEAM_A"}, {"bad name"}} {
		c.TenantAccounts = bad
		if err := c.Validate(); err == nil {
			t.Errorf("tenants %v accepted", bad)
		}
	}
}
