// Package revoke closes live NATS connections whose grant no longer holds. The caches report
// what a change in the cluster takes away (kube.Revocation); the Revoker, logged in as a user of
// the system account, lists the connections of every server of the cluster through nats-server's
// system API, finds those of the identities concerned by their user name
// (kube.ParseConnectionName) and closes each one on the server that holds it. The clients
// reconnect with the token they hold and get the grant as it now is, or a refusal.
//
// Every sidecar of a cluster sees the same change and acts on it; closing is idempotent (a
// connection already closed by a peer is not found, and not counted), so they share no state.
package revoke

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// Defaults of Config.
const (
	// DefaultCoalesce gathers the changes of one burst (a namespace deleted, a rollout) into
	// one sweep of the cluster's connections.
	DefaultCoalesce = 100 * time.Millisecond
	// DefaultGather is how long a sweep waits for the servers of the cluster to list their
	// connections: every server answers the cluster-wide request, and the sweep goes on once
	// none has answered for a tenth of this, or when it has passed.
	DefaultGather = time.Second
	// MaxPending bounds the changes waiting for a sweep. Past it further changes are dropped
	// with a warning (and counted): each costs a few hundred bytes, and tenants who can delete
	// ServiceAccounts or pods control their rate.
	MaxPending = 10000
	// retryDelay is how soon changes are tried again after a sweep failed (no connection to
	// nats-server, servers not answering).
	retryDelay = time.Second
)

// Config configures a Revoker.
type Config struct {
	// URL is the nats-server to connect to (the sidecar's own).
	URL string
	// Credentials returns the current login of a user of the system account (required).
	Credentials func() *callout.Credentials
	// UseJWT logs in with the user JWT of Credentials (operator mode) rather than its nkey.
	UseJWT bool
	// TLS, if set, are the files of a TLS connection.
	TLS *callout.TLSFiles
	// Coalesce and Gather: zero means DefaultCoalesce and DefaultGather.
	Coalesce, Gather time.Duration
	Logger           *slog.Logger
	// Registerer receives the revocation metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
}

// Revoker closes the connections that changes take the grant from. Notify may be called from any
// goroutine; Run does the work.
type Revoker struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	pending map[kube.Revocation]time.Time // when each change was reported
	wake    chan struct{}
	rotate  chan struct{}

	connected atomic.Bool
	lastErr   atomic.Pointer[string]

	revoked  *prometheus.CounterVec
	latency  prometheus.Histogram
	failures prometheus.Counter
	dropped  prometheus.Counter
}

// New validates cfg.
func New(cfg Config) (*Revoker, error) {
	switch {
	case cfg.URL == "":
		return nil, errors.New("revoke: a NATS URL is required")
	case cfg.Credentials == nil:
		return nil, errors.New("revoke: system account credentials are required")
	case cfg.Coalesce < 0 || cfg.Gather < 0:
		return nil, errors.New("revoke: negative coalesce or gather time")
	}
	if cfg.Coalesce == 0 {
		cfg.Coalesce = DefaultCoalesce
	}
	if cfg.Gather == 0 {
		cfg.Gather = DefaultGather
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(cfg.Registerer)
	return &Revoker{
		cfg: cfg, log: cfg.Logger,
		pending: map[kube.Revocation]time.Time{},
		wake:    make(chan struct{}, 1),
		rotate:  make(chan struct{}, 1),
		revoked: f.NewCounterVec(prometheus.CounterOpts{
			Name: "nats_callout_revocations_total",
			Help: "Live connections closed because their grant no longer holds, by reason.",
		}, []string{"reason"}),
		latency: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "nats_callout_revocation_latency_seconds",
			Help:    "Time from a change reaching the informer to the connection it revoked being closed.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30},
		}),
		failures: f.NewCounter(prometheus.CounterOpts{
			Name: "nats_callout_revocation_failures_total",
			Help: "Sweeps of the cluster's connections that failed (retried a second later).",
		}),
		dropped: f.NewCounter(prometheus.CounterOpts{
			Name: "nats_callout_revocations_dropped_total",
			Help: "Changes not acted on because too many were waiting for a sweep.",
		}),
	}, nil
}

// Notify takes a change to act on. It never blocks: a kube.RevocationSink.
func (r *Revoker) Notify(rv kube.Revocation) {
	r.mu.Lock()
	_, dup := r.pending[rv]
	full := !dup && len(r.pending) >= MaxPending
	if !full && !dup {
		r.pending[rv] = time.Now()
	}
	r.mu.Unlock()
	if full {
		r.dropped.Inc()
		r.log.Warn("too many changes waiting to revoke connections; dropped one", "reason", rv.Reason,
			"namespace", rv.Namespace, "serviceaccount", rv.Name, "pending", MaxPending)
		return
	}
	r.log.Debug("revoking connections", "reason", rv.Reason, "namespace", rv.Namespace, "serviceaccount", rv.Name,
		"uid", rv.UID, "pod_uid", rv.PodUID)
	signal(r.wake)
}

// Rotate makes Run log in again with the current credentials.
func (r *Revoker) Rotate() { signal(r.rotate) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Err is why live revocation cannot work right now (no connection to nats-server, the last
// sweep failed), or nil.
func (r *Revoker) Err() error {
	if !r.connected.Load() {
		return errors.New("not connected to nats-server as the system account user (NATS_SYSTEM_CREDS_FILE)")
	}
	if e := r.lastErr.Load(); e != nil {
		return errors.New(*e)
	}
	return nil
}

// Run connects to nats-server and closes connections as changes come, until ctx is done.
func (r *Revoker) Run(ctx context.Context) error {
	for {
		nc, err := r.connect()
		if err != nil {
			return err
		}
		rotated := r.serve(ctx, nc)
		nc.Close()
		r.connected.Store(false)
		if !rotated {
			return nil
		}
		r.log.Info("system account credentials reloaded; logging in again")
	}
}

// serve runs sweeps on one connection; it reports whether it ended for a credential rotation.
func (r *Revoker) serve(ctx context.Context, nc *nats.Conn) bool {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-r.rotate:
			return true
		case <-r.wake:
		case <-retry.C:
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(r.cfg.Coalesce):
		}
		batch := r.take()
		if len(batch) == 0 {
			continue
		}
		if err := r.sweep(nc, batch); err != nil {
			r.failures.Inc()
			msg := err.Error()
			r.lastErr.Store(&msg)
			r.log.Warn("cannot revoke connections yet; retrying", "changes", len(batch), "error", err)
			r.putBack(batch)
			retry.Reset(retryDelay)
			continue
		}
		r.lastErr.Store(nil)
	}
}

// take empties the pending changes.
func (r *Revoker) take() map[kube.Revocation]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	batch := r.pending
	r.pending = make(map[kube.Revocation]time.Time, len(batch))
	return batch
}

// putBack returns the changes of a failed sweep, within MaxPending.
func (r *Revoker) putBack(batch map[kube.Revocation]time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for rv, at := range batch {
		if len(r.pending) >= MaxPending {
			r.dropped.Inc()
			continue
		}
		if _, ok := r.pending[rv]; !ok {
			r.pending[rv] = at
		}
	}
}

// connect opens the system account connection; it retries in the background until it logs in.
func (r *Revoker) connect() (*nats.Conn, error) {
	creds := r.cfg.Credentials()
	login, err := callout.LoginOptions(creds, r.cfg.UseJWT, r.cfg.TLS)
	if err != nil {
		return nil, err
	}
	opts := append(login,
		nats.Name("nats-k8s-oidc-callout revocation"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) { r.up(nc) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { r.up(nc) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			r.connected.Store(false)
			if err != nil {
				r.log.Warn("revocation: disconnected from nats-server; reconnecting", "error", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			r.log.Warn("revocation: NATS connection error", "error", err)
		}),
	)
	nc, err := nats.Connect(r.cfg.URL, opts...)
	if err != nil {
		return nil, err
	}
	if nc.IsConnected() {
		r.up(nc)
	}
	return nc, nil
}

func (r *Revoker) up(nc *nats.Conn) {
	if r.connected.Swap(true) {
		return
	}
	r.log.Info("revocation: connected to nats-server as the system account user", "server", nc.ConnectedServerName())
	// Changes reported while it was down wait for this.
	signal(r.wake)
}
