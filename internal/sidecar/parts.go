package sidecar

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/revoke"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// buildAccounts makes the account choice: with NATS_ALLOWED_ACCOUNTS, from the namespaces'
// nats.io/account labels (and the namespace cache that reads them); without, NATS_ACCOUNT for all.
func (s *sidecar) buildAccounts(c settings.Serve, d Deps, onRevocation kube.RevocationSink) (*kube.Accounts, error) {
	cfg := kube.AccountsConfig{Default: c.Account, Allowed: c.Accounts.AllowedList(), Reserved: c.Accounts.Reserved("")}
	if c.Operator() {
		cfg.Reserved = c.Accounts.Reserved(s.files.creds().Account())
	}
	if len(cfg.Allowed) > 0 {
		var err error
		if s.ns, err = kube.NewNamespaceCache(d.Client, kube.NamespaceConfig{
			Namespaces: c.Policy.WatchedNamespaces(), DefaultAccount: c.Account, Logger: d.Log, Registerer: d.Registry, OnRevocation: onRevocation,
		}); err != nil {
			return nil, fmt.Errorf("NATS_ALLOWED_ACCOUNTS: %w", err)
		}
		cfg.Labels = s.ns
	}
	a, err := kube.NewAccounts(cfg)
	if err != nil {
		return nil, fmt.Errorf("NATS_ACCOUNT or NATS_ALLOWED_ACCOUNTS: %w", err)
	}
	return a, nil
}

// buildBound makes the pod cache and the bound-object checks when VERIFY_BOUND_OBJECTS is on,
// and the source pinning when BIND_SOURCE_IP is; nil interfaces when they are off.
func (s *sidecar) buildBound(c settings.Serve, d Deps, onRevocation kube.RevocationSink) (callout.BoundObjectChecker, callout.SourcePinner, error) {
	if !c.VerifyBoundObjects {
		return nil, nil, nil
	}
	if c.BindSourceIP && d.PodStatus == nil {
		return nil, nil, errors.New("BIND_SOURCE_IP: no client to read pod addresses with")
	}
	var err error
	if s.pods, err = kube.NewPodCache(d.Client, kube.PodCacheConfig{
		Namespaces: c.Policy.WatchedNamespaces(), Logger: d.Log, Registerer: d.Registry, OnRevocation: onRevocation,
	}); err != nil {
		return nil, nil, fmt.Errorf("VERIFY_BOUND_OBJECTS: %w", err)
	}
	bound, err := kube.NewBoundObjects(kube.BoundConfig{Pods: s.pods, Client: d.Client, PodStatus: d.PodStatus})
	if err != nil {
		return nil, nil, fmt.Errorf("VERIFY_BOUND_OBJECTS: %w", err)
	}
	if c.BindSourceIP {
		return bound, bound, nil
	}
	return bound, nil, nil
}

// newRevoker builds live revocation when NATS_SYSTEM_CREDS_FILE is set. Without it a grant lasts
// as long as its user JWT, which start-up says once.
func newRevoker(c settings.Serve, f *files, log *slog.Logger, reg prometheus.Registerer) (*revoke.Revoker, error) {
	if c.SystemCredsFile == "" {
		log.Warn("live revocation is off (NATS_SYSTEM_CREDS_FILE is not set): a connection keeps its grant until its user JWT expires, "+
			"after the token's own expiry or USER_JWT_MAX_TTL, whichever is sooner", "user_jwt_max_ttl", c.MaxTTL.String())
		return nil, nil
	}
	return revoke.New(revoke.Config{
		URL: c.NATSURL, Credentials: f.systemCreds, UseJWT: c.Operator(), TLS: c.TLS(), Logger: log, Registerer: reg,
	})
}

// startupGCPercent is the garbage collector's GOGC until the informer cache has synced.
const startupGCPercent = 25

// startupGC prepares for the initial list, the largest allocation of the sidecar's life: every
// ServiceAccount is decoded whole before the cache keeps its trimmed entry, and almost all of it
// is garbage at once. The garbage collector runs more often until then (unless GOGC is set),
// and the returned function, called once the cache has synced, restores it and gives what the
// list used back to the system rather than leaving it to the scavenger. At 50,000
// ServiceAccounts this keeps the peak at 56 MiB resident instead of 72 (docs/performance.md).
func startupGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return debug.FreeOSMemory
	}
	previous := debug.SetGCPercent(startupGCPercent)
	return func() {
		debug.SetGCPercent(previous)
		debug.FreeOSMemory()
	}
}
