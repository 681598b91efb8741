//go:build e2e

package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// tenantSetup is one deployment with tenant accounts, in either mode: how labels name its
// accounts (names in server-config mode, public keys in operator mode).
type tenantSetup struct {
	d *deployment
	// teamA and teamB are the tenant accounts (NATS_ALLOWED_ACCOUNTS), def is NATS_ACCOUNT,
	// other an account the server knows but the allow-list does not name, callout and system
	// the callout and the system account.
	teamA, teamB, def, other, callout, system string
	// opts are what every client connects with besides its token (operator mode without
	// default_sentinel would need the sentinel's credentials here).
	opts []nats.Option
	// prefix keeps the namespaces of the two modes apart in the shared API server.
	prefix string
}

// tenantDefaults is ACCOUNT_DEFAULTS of both modes: TEAM_A, alone in its account, may use any
// subject; TEAM_B gets shared.> and its inbox; the default account keeps <namespace>.>.
func tenantDefaults(teamA, teamB string) string {
	return `{"` + teamA + `": {"pub": [">"], "sub": [">"]}, "` + teamB + `": {"pub": ["shared.>"], "sub": ["shared.>", "{inbox}.>"]}}`
}

// Scenario (server-config mode): the user JWT's audience names the tenant account; nats-server
// places each tenant's clients in its own account.
func TestTenantAccountsServerConfig(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, deployOpts{
		accounts: []string{"TEAM_A", "TEAM_B", "OTHER"},
		serviceEnv: []string{
			"NATS_ALLOWED_ACCOUNTS=TEAM_A,TEAM_B",
			"ACCOUNT_DEFAULTS=" + tenantDefaults("TEAM_A", "TEAM_B"),
			// One informer per namespace, each listing its Namespace by name (the operator-mode
			// test watches every namespace).
			"WATCH_NAMESPACES=acct-sc-a,acct-sc-b,acct-sc-plain,acct-sc-refused-a,acct-sc-refused-b,acct-sc-refused-c",
		},
	})
	runTenantScenario(t, tenantSetup{d: d, teamA: "TEAM_A", teamB: "TEAM_B", def: "APP", other: "OTHER", callout: "AUTH", system: "SYS", prefix: "acct-sc"})
}

// labelNamespace creates namespace ns (if need be) and sets its nats.io/account label; an
// empty account removes the label.
func labelNamespace(t *testing.T, ns, account string) {
	t.Helper()
	newNamespace(t, ns)
	if account == "" {
		kubectl(t, "label", "namespace", ns, "nats.io/account-")
		return
	}
	kubectl(t, "label", "namespace", ns, "nats.io/account="+account, "--overwrite")
}

// tenantClient is one connection of a namespace's ServiceAccount "app".
func tenantClient(t *testing.T, s tenantSetup, tok string) (*nats.Conn, error) {
	t.Helper()
	return dial(s.d.nats.url(), append([]nats.Option{nats.Token(tok)}, s.opts...)...)
}

// publishErr publishes on a fresh connection and reports a permissions violation, if any.
func publishErr(t *testing.T, s tenantSetup, tok, subject string) error {
	t.Helper()
	nc, err := tenantClient(t, s, tok)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := nc.Publish(subject, []byte("x")); err != nil {
		return err
	}
	return flushErr(nc)
}

func runTenantScenario(t *testing.T, s tenantSetup) {
	nsA, nsB, nsPlain := s.prefix+"-a", s.prefix+"-b", s.prefix+"-plain"
	labelNamespace(t, nsA, s.teamA)
	labelNamespace(t, nsB, s.teamB)
	labelNamespace(t, nsPlain, "")
	tok := map[string]string{}
	for _, ns := range []string{nsA, nsB, nsPlain} {
		newServiceAccount(t, ns, "app", nil)
		tok[ns] = token(t, ns, "app")
	}
	// The per-account defaults show once the labels have reached the service: TEAM_A may
	// publish anywhere, TEAM_B only under shared.>, the default account within its namespace.
	eventually(t, 15*time.Second, "tenant A in its account", func() error { return publishErr(t, s, tok[nsA], "anything.x") })
	wantViolation(t, publishErr(t, s, tok[nsB], "anything.x"), "TEAM_B publish", "anything.x")
	wantViolation(t, publishErr(t, s, tok[nsPlain], "shared.orders"), "default account publish", "shared.orders")
	if err := publishErr(t, s, tok[nsPlain], nsPlain+".x"); err != nil {
		t.Errorf("default account, own namespace: %v", err)
	}
	if err := publishErr(t, s, tok[nsB], "shared.orders"); err != nil {
		t.Errorf("TEAM_B publish shared.orders: %v", err)
	}

	// Same subject names, no crossing: each tenant's subscriber sees only its own tenant.
	wantOnly(t, s, tok[nsA], tok[nsB], tok[nsA], "a")
	wantOnly(t, s, tok[nsB], tok[nsA], tok[nsB], "b")

	// Labels naming an account outside the allow-list, the callout or the system account.
	for i, acc := range []string{s.other, s.callout, s.system} {
		ns := s.prefix + "-refused-" + string(rune('a'+i))
		labelNamespace(t, ns, acc)
		newServiceAccount(t, ns, "app", nil)
		rt := token(t, ns, "app")
		before := s.d.svc.requests(t, "result", "denied", "reason", "account_not_allowed")
		eventually(t, 15*time.Second, "label "+acc+" refused", func() error {
			nc, err := tenantClient(t, s, rt)
			if err == nil {
				nc.Close()
				return errors.New("still allowed")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				return err
			}
			return nil
		})
		if got := s.d.svc.requests(t, "result", "denied", "reason", "account_not_allowed"); got <= before {
			t.Errorf("label %s: account_not_allowed denials stayed at %g; all: %s", acc, got, s.d.svc.metrics(t).requestsString())
		}
	}
	_, ready, err := s.d.svc.get("/readyz")
	if err != nil || !strings.Contains(ready, "[!] accounts:") || !strings.Contains(ready, "outside NATS_ALLOWED_ACCOUNTS") {
		t.Errorf("/readyz does not warn about the refused labels (%v):\n%s", err, ready)
	}

	// Moving namespace B into TEAM_A moves its next login: it now gets TEAM_A's defaults and
	// sees TEAM_A's messages.
	labelNamespace(t, nsB, s.teamA)
	eventually(t, 15*time.Second, "namespace B moved to TEAM_A", func() error { return publishErr(t, s, tok[nsB], "anything.x") })
	wantOnly(t, s, tok[nsB], tok[nsPlain], tok[nsA], "moved")

	for _, acc := range []string{s.teamA, s.teamB, s.def} {
		if s.d.svc.requests(t, "result", "allowed", "account", acc) == 0 {
			t.Errorf("no allowed login counted with account=%s: %s", acc, s.d.svc.metrics(t).requestsString())
		}
	}
	if log := s.d.svc.p.log(); !strings.Contains(log, `"account":"`+s.teamB+`"`) {
		t.Errorf("the decision log does not name account %s", s.teamB)
	}
}

// wantOnly subscribes as sub to shared.orders, has stranger publish there and then friend, and
// checks that sub's first message is friend's: had stranger's crossed over, it would have
// arrived first (both publishes are flushed in order).
func wantOnly(t *testing.T, s tenantSetup, sub, stranger, friend, tag string) {
	t.Helper()
	nc, err := tenantClient(t, s, sub)
	if err != nil {
		t.Fatalf("%s: subscriber: %v", tag, err)
	}
	defer nc.Close()
	subscription, err := nc.SubscribeSync("shared.orders")
	if err != nil {
		t.Fatal(err)
	}
	if err := flushErr(nc); err != nil {
		t.Fatalf("%s: subscribe: %v", tag, err)
	}
	for _, p := range []struct{ tok, body string }{{stranger, "stranger"}, {friend, "friend"}} {
		pc, err := tenantClient(t, s, p.tok)
		if err != nil {
			t.Fatal(err)
		}
		// A stranger may not even be allowed the subject: either way nothing may arrive.
		_ = pc.Publish("shared.orders", []byte(p.body))
		_ = pc.FlushTimeout(5 * time.Second)
		pc.Close()
	}
	m, err := subscription.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("%s: no message from the subscriber's own account: %v", tag, err)
	}
	if string(m.Data) != "friend" {
		t.Errorf("%s: first message %q, want the one from the same account (another tenant's crossed over)", tag, m.Data)
	}
}

// Scenario (operator mode, nsc): the operator guide's steps 1 and 3, then its step 7 (two
// tenant accounts with signing keys the sidecar holds, allowed in AUTH's callout), run as
// written; each tenant's user JWT is signed by its own account's key.
func TestTenantAccountsOperator(t *testing.T) {
	t.Parallel()
	g := newGuideRun(t)
	g.run(t, "step 1", g.doc.commands(t, 1))
	configure, push := splitAt(t, g.doc.commands(t, 3), "# start nats-server -c nats.conf")
	g.run(t, "step 3 (configuration)", configure)
	url := g.startNATS(t)
	g.run(t, "step 3 (nsc push)", push)
	g.run(t, "step 7", g.doc.commands(t, 7))
	// Not for the guide: an account the server knows but the sidecar does not serve, and one
	// the sidecar may place users in but holds no key for.
	g.run(t, "other accounts", `nsc add account --name OTHER
nsc add account --name NOKEY
nsc edit authcallout --account AUTH --allowed-account "$(nsc describe account --name NOKEY --field sub | tr -d '"')"
nsc describe account --name AUTH --raw > public/auth.jwt
nsc push --all`)
	g.noteSeeds(t)
	key := func(name string) string {
		return strings.Trim(strings.TrimSpace(g.run(t, "key of "+name, "nsc describe account --name "+name+" --field sub")), `"`)
	}
	teamA, teamB, app, noKey := key("TEAM_A"), key("TEAM_B"), key("APP"), key("NOKEY")

	read := func(dir string) map[string][]byte {
		files := map[string][]byte{}
		entries, err := os.ReadDir(filepath.Join(g.dir, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			data, err := os.ReadFile(filepath.Join(g.dir, dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = data
		}
		return files
	}
	// Mounted as the kubelet mounts a Secret and a ConfigMap.
	keys := newSecretVolume(t, filepath.Join(g.mount, "keys"), read("secrets"))
	accts := newSecretVolume(t, filepath.Join(g.mount, "accounts"), read("public"))
	tenantKeys := newSecretVolume(t, filepath.Join(g.mount, "tenants"), read("secrets/tenants"))
	tenantJWTs := newSecretVolume(t, filepath.Join(g.mount, "tenant-accounts"), read("public/tenants"))
	svc := g.startService(t, url, map[string]string{
		"NATS_ACCOUNT":                  app,
		"NATS_CREDS_FILE":               keys.path("callout.creds"),
		"NATS_SIGNING_KEY_FILE":         keys.path("auth-signing.nk"),
		"NATS_TARGET_SIGNING_KEY_FILE":  keys.path("app-signing.nk"),
		"NATS_XKEY_FILE":                keys.path("xkey.nk"),
		"NATS_CALLOUT_ACCOUNT_JWT_FILE": accts.path("auth.jwt"),
		"NATS_TARGET_ACCOUNT_JWT_FILE":  accts.path("app.jwt"),
		"NATS_ALLOWED_ACCOUNTS":         teamA + "," + teamB + "," + noKey,
		"NATS_TENANT_SIGNING_KEYS_DIR":  tenantKeys.dir,
		"NATS_TENANT_ACCOUNT_JWTS_DIR":  tenantJWTs.dir,
		"NATS_SYSTEM_ACCOUNT":           key("SYS"),
		"ACCOUNT_DEFAULTS":              tenantDefaults(teamA, teamB),
	})
	wantSetupOK(t, svc, true)
	d := &deployment{dir: g.base, nats: &natsServer{name: "nats-server", dir: g.dir, port: g.port, p: g.nats}, svc: svc}
	s := tenantSetup{d: d, teamA: teamA, teamB: teamB, def: app, other: key("OTHER"), callout: key("AUTH"), system: key("SYS"), prefix: "acct-op"}
	runTenantScenario(t, s)

	// An allowed account without a signing key: refused, and /readyz says why.
	labelNamespace(t, "acct-op-nokey", noKey)
	newServiceAccount(t, "acct-op-nokey", "app", nil)
	tok := token(t, "acct-op-nokey", "app")
	eventually(t, 15*time.Second, "account without a key refused", func() error {
		nc, err := tenantClient(t, s, tok)
		if err == nil {
			nc.Close()
			return errors.New("still allowed")
		}
		return nil
	})
	if got := svc.requests(t, "result", "denied", "reason", "account_key_missing", "account", noKey); got == 0 {
		t.Errorf("no account_key_missing denial counted for %s: %s", noKey, svc.metrics(t).requestsString())
	}
	if _, ready, err := svc.get("/readyz"); err != nil || !strings.Contains(ready, "names an account the service holds no signing key for") {
		t.Errorf("/readyz does not warn about the account without a key (%v):\n%s", err, ready)
	}
}
