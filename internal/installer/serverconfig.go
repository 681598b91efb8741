package installer

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nkeys"
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
	// TenantAccounts are the accounts a namespace's nats.io/account label may place workloads
	// in (the sidecar's NATS_ALLOWED_ACCOUNTS). With them, auth_callout.allowed_accounts lists
	// every target account.
	TenantAccounts []string
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
	for _, n := range append([]string{c.CalloutAccount, c.SystemAccount}, c.targets()...) {
		if !accountName.MatchString(n) {
			return fmt.Errorf("%w: account %q: %s", ErrInvalidServerConfig, n, accountNameRule)
		}
	}
	if c.CalloutAccount == c.SystemAccount {
		return fmt.Errorf("%w: the callout account and the system account are both %q; they must differ", ErrInvalidServerConfig, c.CalloutAccount)
	}
	seen := map[string]bool{}
	for _, t := range c.targets() {
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

// targets are the target and the tenant accounts.
func (c ServerConfig) targets() []string {
	return append(append([]string(nil), c.TargetAccounts...), c.TenantAccounts...)
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
	for _, t := range c.TenantAccounts {
		add(t, "tenant account: namespaces labelled nats.io/account="+t+" are placed here", c.JetStream)
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
	if len(c.TenantAccounts) > 0 {
		b.WriteString("    # the accounts the callout places users in (the service's NATS_ACCOUNT and NATS_ALLOWED_ACCOUNTS)\n")
		fmt.Fprintf(&b, "    allowed_accounts: [ %s ]\n", strings.Join(c.targets(), ", "))
	}
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
	if len(c.TenantAccounts) > 0 {
		allowed := make([]any, 0, len(c.targets()))
		for _, t := range c.targets() {
			allowed = append(allowed, t)
		}
		callout["allowed_accounts"] = allowed
	}
	return map[string]any{
		"accounts":       accounts,
		"system_account": c.SystemAccount,
		"authorization":  map[string]any{"auth_callout": callout},
	}, nil
}
