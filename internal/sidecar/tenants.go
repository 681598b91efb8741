package sidecar

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

// tenantFiles are operator mode's per-account files: <account>.nk signing keys and
// <account>.jwt account JWTs, each a reload file. The set of accounts is fixed at start-up.
type tenantFiles struct {
	keys map[string]func() *callout.KeyRing
	jwts map[string]func() *jwt.AccountClaims
}

// loadTenantFiles mounts the files of NATS_TENANT_SIGNING_KEYS_DIR and
// NATS_TENANT_ACCOUNT_JWTS_DIR. A file named by anything but an account public key, or for an
// account outside NATS_ALLOWED_ACCOUNTS, stops start-up.
func loadTenantFiles(c settings.Serve, w *reload.Watcher, ch *changes, log *slog.Logger) (tenantFiles, error) {
	t := tenantFiles{keys: map[string]func() *callout.KeyRing{}, jwts: map[string]func() *jwt.AccountClaims{}}
	allowed := c.Accounts.AllowedList()
	for _, dir := range []struct{ setting, path, ext string }{
		{"NATS_TENANT_SIGNING_KEYS_DIR", c.TenantKeysDir, ".nk"},
		{"NATS_TENANT_ACCOUNT_JWTS_DIR", c.TenantJWTsDir, ".jwt"},
	} {
		accounts, err := accountFiles(dir.setting, dir.path, dir.ext, allowed)
		if err != nil {
			return t, err
		}
		for _, acc := range accounts {
			path := filepath.Join(dir.path, acc+dir.ext)
			name := "tenant_" + strings.TrimPrefix(dir.ext, ".") + "_" + acc
			if dir.ext == ".nk" {
				t.keys[acc], err = mount(w, ch, dir.setting, name, path, callout.ParseSigningKeys,
					func(k *callout.KeyRing) { log.Info("tenant account signing keys reloaded", "account", acc, "keys", k) })
			} else {
				t.jwts[acc], err = mount(w, ch, dir.setting, name, path, callout.ParseAccountJWT,
					func(ac *jwt.AccountClaims) { log.Info("tenant account JWT reloaded", "account", ac.Subject) })
			}
			if err != nil {
				return t, err
			}
		}
	}
	return t, nil
}

// accountFiles lists the accounts with a file of ext in dir ("" lists none). Entries whose
// names start with '.' (a mounted Secret's ..data and its timestamped directories) are skipped.
func accountFiles(setting, dir, ext string, allowed []string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", setting, err)
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ext) {
			continue
		}
		acc := strings.TrimSuffix(name, ext)
		switch {
		case !nkeys.IsValidPublicAccountKey(acc):
			return nil, fmt.Errorf("%s: %s is not named <account public key>%s", setting, name, ext)
		case !slices.Contains(allowed, acc):
			return nil, fmt.Errorf("%s: %s is for account %s, which is not in NATS_ALLOWED_ACCOUNTS", setting, name, acc)
		}
		out = append(out, acc)
	}
	return out, nil
}

// keysFor is the key ring held for account, nil without one.
func (t tenantFiles) keysFor(account string) *callout.KeyRing {
	if f, ok := t.keys[account]; ok {
		return f()
	}
	return nil
}

// setup lists every allowed account with what is held for it, for CheckOperatorSetup.
func (t tenantFiles) setup(allowed []string) []callout.TenantAccount {
	out := make([]callout.TenantAccount, 0, len(allowed))
	for _, acc := range allowed {
		ta := callout.TenantAccount{Account: acc, Keys: t.keysFor(acc)}
		if f, ok := t.jwts[acc]; ok {
			ta.JWT = f()
		}
		out = append(out, ta)
	}
	return out
}

// accountWarnings are /readyz's warnings about namespace labels: an account outside the
// allow-list, or one the service holds no signing key for.
func accountWarnings(ns *kube.NamespaceCache, accounts *kube.Accounts, h *callout.Handler) error {
	if ns == nil {
		return nil
	}
	var msgs []string
	for _, acc := range ns.LabelledAccounts() {
		switch {
		case !slices.Contains(accounts.Targets(), acc):
			msgs = append(msgs, fmt.Sprintf("a namespace label %s=%s names an account outside NATS_ALLOWED_ACCOUNTS (its logins are refused: account_not_allowed)", kube.LabelAccount, kube.Clip(acc, 64)))
		case !h.HoldsKeyFor(acc):
			msgs = append(msgs, fmt.Sprintf("a namespace label %s=%s names an account the service holds no signing key for (its logins are refused: account_key_missing)", kube.LabelAccount, acc))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return errors.New(strings.Join(msgs, "; "))
}
