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
	signingKeys *reload.File[*callout.KeyRing]
	xkey        func() *callout.XKey
	creds       func() *callout.Credentials
	// Operator mode only.
	targetKeys func() *callout.KeyRing
	calloutJWT func() *jwt.AccountClaims
	targetJWT  func() *jwt.AccountClaims

	changes *changes
}

// changes tells the run loop, from the watcher's goroutine, that files changed: the reload
// callbacks exist before the components they affect, so they only leave a note here.
type changes struct {
	// signal has room for one pending note; more changes before it is read coalesce.
	signal chan struct{}
	// creds is set when the service's own NATS login changed (the connection must rotate).
	creds atomic.Bool
}

func newChanges() *changes { return &changes{signal: make(chan struct{}, 1)} }

func (c *changes) note(creds bool) {
	if creds {
		c.creds.Store(true)
	}
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// loadFiles reads and registers every credential file of c. A missing or unparsable file
// stops start-up with an error naming its setting.
func loadFiles(c settings.Serve, w *reload.Watcher, log *slog.Logger) (*files, error) {
	f := &files{changes: newChanges(), xkey: func() *callout.XKey { return nil }, creds: func() *callout.Credentials { return nil }}
	var err error
	f.signingKeys, err = reload.Add(w, "signing_key", c.SigningKeyFile, callout.ParseSigningKeys, func(k *callout.KeyRing) {
		log.Info("signing keys reloaded", "issuers", k)
		f.changes.note(false)
	})
	if err != nil {
		return nil, fmt.Errorf("NATS_SIGNING_KEY_FILE: %w", err)
	}
	f.targetKeys = f.signingKeys.Current
	if c.XKeyFile != "" {
		x, err := reload.Add(w, "xkey", c.XKeyFile, callout.ParseXKey, func(x *callout.XKey) {
			log.Info("xkey reloaded", "xkey", x)
			f.changes.note(false)
		})
		if err != nil {
			return nil, fmt.Errorf("NATS_XKEY_FILE: %w", err)
		}
		f.xkey = x.Current
	}
	if c.CredsFile != "" {
		cr, err := reload.Add(w, "creds", c.CredsFile, callout.ParseCredentials, func(cr *callout.Credentials) {
			log.Info("NATS credentials reloaded", "user", cr)
			f.changes.note(true)
		})
		if err != nil {
			return nil, fmt.Errorf("NATS_CREDS_FILE: %w", err)
		}
		f.creds = cr.Current
	}
	if c.Operator() {
		if err := f.loadOperatorFiles(c, w, log); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// loadOperatorFiles reads operator mode's target signing key and the account JWTs.
func (f *files) loadOperatorFiles(c settings.Serve, w *reload.Watcher, log *slog.Logger) error {
	if c.TargetSigningKeyFile != "" && c.TargetSigningKeyFile != c.SigningKeyFile {
		k, err := reload.Add(w, "target_signing_key", c.TargetSigningKeyFile, callout.ParseSigningKeys, func(k *callout.KeyRing) {
			log.Info("target account signing keys reloaded", "keys", k)
			f.changes.note(false)
		})
		if err != nil {
			return fmt.Errorf("NATS_TARGET_SIGNING_KEY_FILE: %w", err)
		}
		f.targetKeys = k.Current
	}
	accountJWT := func(name, path, setting string) (func() *jwt.AccountClaims, error) {
		if path == "" {
			return func() *jwt.AccountClaims { return nil }, nil
		}
		a, err := reload.Add(w, name, path, callout.ParseAccountJWT, func(ac *jwt.AccountClaims) {
			log.Info("account JWT reloaded", "file", name, "account", ac.Subject, "signing_keys", len(ac.SigningKeys))
			f.changes.note(false)
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", setting, err)
		}
		return a.Current, nil
	}
	var err error
	if f.calloutJWT, err = accountJWT("callout_account_jwt", c.CalloutAccountJWTFile, "NATS_CALLOUT_ACCOUNT_JWT_FILE"); err != nil {
		return err
	}
	f.targetJWT, err = accountJWT("target_account_jwt", c.TargetAccountJWTFile, "NATS_TARGET_ACCOUNT_JWT_FILE")
	return err
}

// operatorSetup is what operator mode's cross-check reads, from the files now in use.
func (f *files) operatorSetup(account string) callout.OperatorSetup {
	return callout.OperatorSetup{
		Credentials: f.creds(), SigningKeys: f.signingKeys.Current(), TargetAccount: account,
		TargetKeys: f.targetKeys(), XKey: f.xkey(), CalloutAccountJWT: f.calloutJWT(), TargetAccountJWT: f.targetJWT(),
	}
}
