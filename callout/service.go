package callout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultQueueGroup is the queue group every instance joins: nats-server prefers a local queue
// member, so each sidecar answers its own server and a peer takes over when it is gone.
const DefaultQueueGroup = "nats-k8s-oidc-callout"

const (
	// A connection that has been down this long is reported (at most once per repeatLogPeriod)
	// with the last error nats.go saw: failures while (re)connecting, such as a credential the
	// server does not accept yet or a server that never answers, raise no nats.go callback.
	downReportAfter = 10 * time.Second
	// Repeated connection errors and overload drops are logged at most once per period.
	repeatLogPeriod = time.Minute
	// readyFlushTimeout bounds the round trip that proves the server has the subscription.
	readyFlushTimeout = 5 * time.Second
)

// ServiceConfig configures the request loop and its NATS connection.
type ServiceConfig struct {
	// URL of nats-server; may carry user:password (it is never logged with them).
	URL string
	// Credentials returns the current login credential, or nil when URL carries one.
	Credentials func() *Credentials
	// UseJWT logs in with the credential's user JWT (operator mode) rather than its bare nkey
	// (server-config mode, where the server knows the service by `nkey`).
	UseJWT bool
	// TLS, if set, makes the connection use TLS with these files, read again at every
	// (re)connect so that rotated certificates are picked up.
	TLS *TLSFiles
	// Handler decides requests (required).
	Handler *Handler
	// Workers bounds concurrent requests; 0 means 4×GOMAXPROCS.
	Workers int
	// QueueSize bounds the requests received but not yet taken by a worker; 0 means 64 per
	// worker, at least 1024 (about what the workers answer within RequestTimeout when the CPU
	// is shared with a busy nats-server). Workers take the newest request first; when the queue
	// is full the oldest is dropped (reason "overloaded") to make room for the new one.
	QueueSize int
	// RequestTimeout bounds one request, counted from its arrival, and must be below the
	// server's authorization timeout (2 s by default); 0 means 1.5 s.
	RequestTimeout time.Duration
	// QueueGroup defaults to DefaultQueueGroup.
	QueueGroup string
	// Name is the NATS connection name.
	Name string
	// ReconnectWait between attempts; 0 means 1 s (with jitter).
	ReconnectWait time.Duration
	Logger        *slog.Logger
	// Metrics, if set, must belong to this Service alone: nats_callout_nats_connected reports
	// this Service's connection.
	Metrics *Metrics
}

// Service answers callout requests on a NATS connection that it keeps up forever: it retries
// until nats-server is first reachable, reconnects after every outage, replaces a connection
// that nats.go closed, and replaces its connection when its credentials rotate without leaving
// a request unanswered.
type Service struct {
	cfg  ServiceConfig
	log  *slog.Logger
	url  string // cfg.URL without secrets, for logs and errors
	work *requestQueue

	rotate chan struct{}
	// closed is signalled when a connection closed without the service closing it; Run
	// then looks at which one.
	closed chan struct{}

	active   atomic.Pointer[session]
	stopping atomic.Bool
	// downReport is downReportAfter; tests shorten it.
	downReport time.Duration

	overload repeatLog
}

type job struct {
	msg  *nats.Msg
	sess *session
	at   time.Time
}

// NewService validates cfg.
func NewService(cfg ServiceConfig) (*Service, error) {
	if cfg.URL == "" {
		return nil, errors.New("callout: a NATS URL is required")
	}
	if cfg.Handler == nil {
		return nil, errors.New("callout: a handler is required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = max(1024, 64*cfg.Workers)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 1500 * time.Millisecond
	}
	if cfg.QueueGroup == "" {
		cfg.QueueGroup = DefaultQueueGroup
	}
	if cfg.Name == "" {
		cfg.Name = "nats-k8s-oidc-callout"
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = time.Second
	}
	if cfg.Credentials == nil {
		cfg.Credentials = func() *Credentials { return nil }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		cfg:    cfg,
		log:    cfg.Logger,
		url:    RedactURL(cfg.URL),
		work:   newRequestQueue(cfg.QueueSize),
		rotate: make(chan struct{}, 1),
		closed: make(chan struct{}, 1),

		downReport: downReportAfter,
	}
	if cfg.Metrics != nil {
		cfg.Metrics.bindConnected(func() bool { return s.Ready() == nil })
	}
	return s, nil
}

// Rotate tells the service its credentials changed. It opens a connection with the new ones,
// subscribes, and only then drains the old connection; until the server accepts the new
// credential the old connection keeps serving.
func (s *Service) Rotate() {
	select {
	case s.rotate <- struct{}{}:
	default:
	}
}

// Ready returns nil while the service is connected with an active callout subscription that
// the server has confirmed, and otherwise says what is missing.
func (s *Service) Ready() error {
	if s.stopping.Load() {
		return errors.New("nats: shutting down")
	}
	sess := s.active.Load()
	switch {
	case sess == nil:
		return errors.New("nats: not started")
	case sess.nc.IsClosed():
		return fmt.Errorf("nats: connection to %s closed; opening a new one", s.url)
	case !sess.nc.IsConnected():
		msg := fmt.Sprintf("nats: not connected to %s (%s)", s.url, strings.ToLower(sess.nc.Status().String()))
		if err := sess.nc.LastError(); err != nil {
			msg += ": " + errString(err)
		}
		return errors.New(msg)
	case !sess.sub.IsValid():
		return errors.New("nats: callout subscription not active")
	case !sess.isReady():
		return errors.New("nats: connected, waiting for the server to confirm the callout subscription")
	}
	return nil
}

// Run serves until ctx is done, then stops taking requests, answers those in flight, drains the
// connection and returns nil. It returns an error only if it cannot open a connection at all
// at start (an invalid URL or credential).
func (s *Service) Run(ctx context.Context) error {
	var workers, retiring sync.WaitGroup
	for range s.cfg.Workers {
		workers.Go(func() { s.worker(ctx) })
	}
	retire := func(sess *session) {
		if sess != nil {
			sess.retiring.Store(true)
			retiring.Go(func() { s.retire(sess) })
		}
	}
	defer func() {
		// Retiring sessions may still hand requests to the workers.
		retiring.Wait()
		s.work.close()
		workers.Wait()
	}()

	cur, err := s.open(s.cfg.Credentials(), false)
	if err != nil {
		return err
	}
	s.active.Store(cur)
	var (
		pending *session
		// reopen fires when a replacement for a closed connection could not be opened.
		reopen      <-chan time.Time
		report      = time.NewTicker(s.downReport)
		lastReports = map[*session]time.Time{}
	)
	defer report.Stop()

	for {
		var pendingReady <-chan struct{}
		if pending != nil {
			pendingReady = pending.ready
		}
		select {
		case <-ctx.Done():
			s.stopping.Store(true)
			s.log.Info("stopping: draining the NATS connection and answering requests in flight")
			retire(pending)
			retire(cur)
			return nil

		case <-s.rotate:
			pending = s.rotated(cur, pending, retire)

		case <-pendingReady:
			old := cur
			cur, pending = pending, nil
			s.active.Store(cur)
			s.log.Info("new NATS connection subscribed; draining the old one", "user", cur.pub, "previous_user", old.pub,
				"switch_ms", time.Since(cur.opened).Milliseconds())
			retire(old)

		case <-s.closed:
			if pending != nil && pending.nc.IsClosed() {
				s.log.Error("new NATS connection closed before it was ready; opening it again", "user", pending.pub)
				retire(pending)
				pending = nil
				if creds := s.cfg.Credentials(); !sameCredentials(creds, cur.creds, s.cfg.UseJWT) {
					if next, err := s.open(creds, false); err == nil {
						pending = next
					} else {
						s.log.Error("cannot open a connection with the new credentials; keeping the current one", "error", err)
					}
				}
			}
			if cur.nc.IsClosed() && reopen == nil {
				cur, pending, reopen = s.replace(cur, pending, retire)
			}

		case <-reopen:
			reopen = nil
			if cur.nc.IsClosed() {
				cur, pending, reopen = s.replace(cur, pending, retire)
			}

		case now := <-report.C:
			s.reportDown(now, cur, pending, lastReports)
		}
	}
}

// rotated reacts to changed credentials: it opens a connection with them beside the current
// one (which keeps serving until the new one is subscribed) and returns the pending session.
func (s *Service) rotated(cur, pending *session, retire func(*session)) *session {
	creds := s.cfg.Credentials()
	switch {
	case sameCredentials(creds, cur.creds, s.cfg.UseJWT):
		if pending != nil {
			s.log.Info("credentials are back to the ones in use; abandoning the new NATS connection", "user", pending.pub)
			retire(pending)
		}
		return nil
	case pending != nil && sameCredentials(creds, pending.creds, s.cfg.UseJWT):
		return pending
	}
	next, err := s.open(creds, false)
	if err != nil {
		s.log.Error("cannot open a connection with the new credentials; keeping the current one", "error", err)
		return pending
	}
	if pending != nil {
		s.log.Info("credentials changed again before the previous new connection was ready; replacing it", "abandoned_user", pending.pub)
		retire(pending)
	}
	s.log.Info("credentials changed: opening a new NATS connection before draining the old one", "user", next.pub, "previous_user", cur.pub)
	return next
}

// reportDown says so when a connection has been trying for a while: a rotation waiting for
// the server to accept the new credential, or a server that is down or refuses us. lastReports
// limits it to one line per connection and repeatLogPeriod.
func (s *Service) reportDown(now time.Time, cur, pending *session, lastReports map[*session]time.Time) {
	for _, sess := range []*session{pending, cur} {
		if sess == nil {
			continue
		}
		down := sess.downSince.Load()
		if down == 0 || now.Sub(time.Unix(0, down)) < s.downReport {
			continue
		}
		if last, ok := lastReports[sess]; ok && now.Sub(last) < repeatLogPeriod {
			continue
		}
		lastReports[sess] = now
		msg := "NATS connection still down; retrying"
		if sess == pending {
			msg = "new NATS connection not up yet; the old one keeps serving"
		}
		s.log.Warn(msg, "user", sess.pub, "url", s.url, "down_since", time.Unix(0, down).UTC().Format(time.RFC3339Nano),
			"status", strings.ToLower(sess.nc.Status().String()), "error", errString(sess.nc.LastError()))
	}
	for sess := range lastReports {
		if sess != cur && sess != pending {
			delete(lastReports, sess)
		}
	}
}

// replace swaps a connection that nats.go closed for a new one: the service must never sit on a
// dead connection. A pending connection with newer credentials takes its place if there is one.
// If no connection can be opened it returns a timer to try again.
func (s *Service) replace(cur, pending *session, retire func(*session)) (*session, *session, <-chan time.Time) {
	if pending != nil {
		s.log.Error("NATS connection closed; the new connection being opened takes its place", "user", cur.pub, "error", errString(cur.nc.LastError()))
		s.active.Store(pending)
		retire(cur)
		return pending, nil, nil
	}
	next, err := s.open(s.cfg.Credentials(), true)
	if err != nil {
		s.log.Error("NATS connection closed and a new one cannot be opened; retrying", "error", err)
		return cur, nil, time.After(s.cfg.ReconnectWait)
	}
	s.log.Error("NATS connection closed; opening a new one", "user", cur.pub, "error", errString(cur.nc.LastError()))
	s.active.Store(next)
	retire(cur)
	return next, nil, nil
}

func (s *Service) worker(ctx context.Context) {
	for {
		j, ok := s.work.pop()
		if !ok {
			return
		}
		s.serve(ctx, j)
	}
}

func (s *Service) serve(ctx context.Context, j job) {
	defer j.sess.inflight.Done()
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.queueWait.Observe(time.Since(j.at).Seconds())
	}
	// The deadline counts from arrival: time spent queued is time the server is waiting.
	// Requests in flight at shutdown are still answered, so the deadline is not tied to ctx.
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), j.at.Add(s.cfg.RequestTimeout))
	defer cancel()
	reply, _ := s.cfg.Handler.Handle(rctx, j.msg.Data, j.msg.Header)
	if reply == nil || j.msg.Reply == "" {
		return
	}
	if err := j.msg.Respond(reply); err != nil {
		s.log.Warn("cannot send callout response", "error", err)
	}
}
