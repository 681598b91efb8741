package settings

import (
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestServeAccounts(t *testing.T) {
	env := maps.Clone(validEnv)
	env["NATS_ALLOWED_ACCOUNTS"] = "TEAM_A, TEAM_B"
	env["ACCOUNT_DEFAULTS"] = `{"TEAM_A": {"pub": [">"], "sub": [">"]}}`
	c, err := ParseServe(nil, lookupIn(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Accounts.AllowedList(); len(got) != 2 || got[1] != "TEAM_B" {
		t.Errorf("allowed = %v", got)
	}
	d, err := c.AccountDefaults()
	if err != nil || len(d) != 1 || d["TEAM_A"].Pub[0] != ">" {
		t.Errorf("AccountDefaults = %v, %v", d, err)
	}
	for _, tc := range []struct{ set, value, want string }{
		{"NATS_ALLOWED_ACCOUNTS", "AUTH", "NATS_ALLOWED_ACCOUNTS"},
		{"NATS_ALLOWED_ACCOUNTS", "SYS", "NATS_ALLOWED_ACCOUNTS"},
		{"NATS_ALLOWED_ACCOUNTS", "$SYS", "NATS_ALLOWED_ACCOUNTS"},
		{"NATS_ALLOWED_ACCOUNTS", "APP", "NATS_ALLOWED_ACCOUNTS"},
		{"NATS_ALLOWED_ACCOUNTS", "bad name!", "NATS_ALLOWED_ACCOUNTS"},
		{"ACCOUNT_DEFAULTS", `{"TEAM_C": {}}`, "ACCOUNT_DEFAULTS"},
		{"ACCOUNT_DEFAULTS", `{"TEAM_A": {"pub": ["a..b"]}}`, "ACCOUNT_DEFAULTS"},
		{"ACCOUNT_DEFAULTS", `not json`, "ACCOUNT_DEFAULTS"},
		{"NATS_TENANT_SIGNING_KEYS_DIR", "/keys", "NATS_TENANT_"},
		{"NATS_SYSTEM_ACCOUNT", "TEAM_A", "NATS_ALLOWED_ACCOUNTS"},
	} {
		bad := maps.Clone(env)
		bad[tc.set] = tc.value
		if _, err := ParseServe(nil, lookupIn(bad), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%s: got %v, want an error naming %s", tc.set, tc.value, err, tc.want)
		}
	}
	op := maps.Clone(env)
	op["NATS_ACCOUNT"] = accountKey(t)
	op["ACCOUNT_DEFAULTS"] = ""
	if _, err := ParseServe(nil, lookupIn(op), io.Discard); err == nil || !strings.Contains(err.Error(), "NATS_ALLOWED_ACCOUNTS") {
		t.Errorf("operator mode with account names: got %v, want NATS_ALLOWED_ACCOUNTS refused", err)
	}
	op["NATS_ALLOWED_ACCOUNTS"] = accountKey(t)
	if _, err := ParseServe(nil, lookupIn(op), io.Discard); err == nil || !strings.Contains(err.Error(), "NATS_TENANT_SIGNING_KEYS_DIR") {
		t.Errorf("operator mode without tenant keys: got %v", err)
	}
	op["NATS_TENANT_SIGNING_KEYS_DIR"] = "/keys/tenants"
	if _, err := ParseServe(nil, lookupIn(op), io.Discard); err != nil {
		t.Errorf("operator mode with tenant keys: %v", err)
	}
}

func accountKey(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
