package sidecar

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/nats-io/jwt/v2"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

// files are the mounted credentials the service runs with, each reloaded when its Secret or
// ConfigMap changes. Unset optional files read as nil.
type files struct {
	signingKeys func() *callout.KeyRing
	xkey        func() *callout.XKey
	creds       func() *callout.Credentials
	// systemCreds is the system account user of live revocation; nil when it is off.
	systemCreds func() *callout.Credentials
	// Operator mode only.
	targetKeys func() *callout.KeyRing
	calloutJWT func() *jwt.AccountClaims
	targetJWT  func() *jwt.AccountClaims
	tenants    tenantFiles

	changes *changes
}

// changes tells the run loop, from the watcher's goroutine, that files changed: the reload
// callbacks exist before the components they affect, so they only leave a note here.
type changes struct {
	// signal has room for one pending note; more changes before it is read coalesce.
	signal chan struct{}
	// creds is set when the service's own NATS login changed (the connection must rotate).
	creds atomic.Bool
	// system is set when the system account login of live revocation changed.
	system atomic.Bool
}

func newChanges() *changes { return &changes{signal: make(chan struct{}, 1)} }

func (c *changes) note(file string) {
	switch file {
	case "creds":
		c.creds.Store(true)
	case "system_creds":
		c.system.Store(true)
	}
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// loadFiles reads and registers every credential file of c. A missing or unparsable file
// stops start-up with an error naming its setting.
func loadFiles(c settings.Serve, w *reload.Watcher, log *slog.Logger) (*files, error) {
	f := &files{changes: newChanges()}
	var err error
	if f.signingKeys, err = mount(w, f.changes, "NATS_SIGNING_KEY_FILE", "signing_key", c.SigningKeyFile, callout.ParseSigningKeys,
		func(k *callout.KeyRing) { log.Info("signing keys reloaded", "issuers", k) }); err != nil {
		return nil, err
	}
	f.targetKeys = f.signingKeys
	if f.xkey, err = mount(w, f.changes, "NATS_XKEY_FILE", "xkey", c.XKeyFile, callout.ParseXKey,
		func(x *callout.XKey) { log.Info("xkey reloaded", "xkey", x) }); err != nil {
		return nil, err
	}
	if f.creds, err = mount(w, f.changes, "NATS_CREDS_FILE", "creds", c.CredsFile, callout.ParseCredentials,
		func(cr *callout.Credentials) { log.Info("NATS credentials reloaded", "user", cr) }); err != nil {
		return nil, err
	}
	if f.systemCreds, err = mount(w, f.changes, "NATS_SYSTEM_CREDS_FILE", "system_creds", c.SystemCredsFile, callout.ParseCredentials,
		func(cr *callout.Credentials) { log.Info("system account credentials reloaded", "user", cr) }); err != nil {
		return nil, err
	}
	if c.SystemCredsFile != "" && c.Operator() && f.systemCreds().JWT() == "" {
		return nil, fmt.Errorf("NATS_SYSTEM_CREDS_FILE: operator mode needs the system account user's .creds file (user JWT and seed), not a bare seed")
	}
	f.calloutJWT, f.targetJWT = none[*jwt.AccountClaims], none[*jwt.AccountClaims]
	if c.Operator() {
		if err := f.loadOperatorFiles(c, w, log); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// loadOperatorFiles reads operator mode's target signing key and the account JWTs.
func (f *files) loadOperatorFiles(c settings.Serve, w *reload.Watcher, log *slog.Logger) error {
	var err error
	if c.TargetSigningKeyFile != "" && c.TargetSigningKeyFile != c.SigningKeyFile {
		if f.targetKeys, err = mount(w, f.changes, "NATS_TARGET_SIGNING_KEY_FILE", "target_signing_key", c.TargetSigningKeyFile,
			callout.ParseSigningKeys, func(k *callout.KeyRing) { log.Info("target account signing keys reloaded", "keys", k) }); err != nil {
			return err
		}
	}
	accountJWT := func(name string) func(*jwt.AccountClaims) {
		return func(ac *jwt.AccountClaims) {
			log.Info("account JWT reloaded", "file", name, "account", ac.Subject, "signing_keys", len(ac.SigningKeys))
		}
	}
	if f.calloutJWT, err = mount(w, f.changes, "NATS_CALLOUT_ACCOUNT_JWT_FILE", "callout_account_jwt", c.CalloutAccountJWTFile,
		callout.ParseAccountJWT, accountJWT("callout_account_jwt")); err != nil {
		return err
	}
	if f.targetJWT, err = mount(w, f.changes, "NATS_TARGET_ACCOUNT_JWT_FILE", "target_account_jwt", c.TargetAccountJWTFile,
		callout.ParseAccountJWT, accountJWT("target_account_jwt")); err != nil {
		return err
	}
	f.tenants, err = loadTenantFiles(c, w, f.changes, log)
	return err
}

// mount registers the file of a setting with the watcher and returns its current value; a
// setting left empty reads as the zero value. Each reloaded value is logged by logReload and
// noted for the run loop by its name.
func mount[T any](w *reload.Watcher, ch *changes, setting, name, path string, parse func([]byte) (T, error), logReload func(T)) (func() T, error) {
	if path == "" {
		return none[T], nil
	}
	f, err := reload.Add(w, name, path, parse, func(v T) {
		logReload(v)
		ch.note(name)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", setting, err)
	}
	return f.Current, nil
}

// none is the value of a file that is not configured.
func none[T any]() T {
	var zero T
	return zero
}

// operatorSetup is what operator mode's cross-check reads, from the files now in use.
func (f *files) operatorSetup(account string, tenants []string) callout.OperatorSetup {
	return callout.OperatorSetup{
		Credentials: f.creds(), SigningKeys: f.signingKeys(), TargetAccount: account,
		TargetKeys: f.targetKeys(), XKey: f.xkey(), CalloutAccountJWT: f.calloutJWT(), TargetAccountJWT: f.targetJWT(),
		Tenants: f.tenants.setup(tenants),
	}
}
