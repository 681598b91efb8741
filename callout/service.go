package callout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
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
	// worker, at least 1024. A request that finds the queue full is dropped at once
	// (reason "overloaded") rather than answered after its server has given up on it.
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
	work chan job

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

// session is one NATS connection with its callout subscription.
type session struct {
	nc     *nats.Conn
	sub    *nats.Subscription
	creds  *Credentials
	pub    string
	opened time.Time
	// replaces is set on a connection opened because the previous one closed: its first
	// connect is a reconnect as far as anyone watching the metrics is concerned.
	replaces bool

	// mu orders message intake against retire: once stopped is set no request is taken, so
	// inflight.Wait in retire cannot race with inflight.Add.
	mu       sync.Mutex
	stopped  bool
	inflight sync.WaitGroup

	retiring atomic.Bool
	// downSince is when the connection was last lost (or opened), in Unix nanoseconds; 0 while up.
	downSince atomic.Int64
	// subscribed is set once sub exists; connection callbacks may run before that.
	subscribed atomic.Bool
	ready      chan struct{} // closed once connected and the server has the subscription
	once       sync.Once

	errLog repeatLog
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
		work:   make(chan job, cfg.QueueSize),
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
			msg += ": " + err.Error()
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
		close(s.work)
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
			creds := s.cfg.Credentials()
			switch {
			case sameCredentials(creds, cur.creds, s.cfg.UseJWT):
				if pending != nil {
					s.log.Info("credentials are back to the ones in use; abandoning the new NATS connection", "user", pending.pub)
					retire(pending)
					pending = nil
				}
				continue
			case pending != nil && sameCredentials(creds, pending.creds, s.cfg.UseJWT):
				continue
			}
			next, err := s.open(creds, false)
			if err != nil {
				s.log.Error("cannot open a connection with the new credentials; keeping the current one", "error", err)
				continue
			}
			if pending != nil {
				s.log.Info("credentials changed again before the previous new connection was ready; replacing it", "abandoned_user", pending.pub)
				retire(pending)
			}
			s.log.Info("credentials changed: opening a new NATS connection before draining the old one", "user", next.pub, "previous_user", cur.pub)
			pending = next

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
			// Say so when a connection has been trying for a while: a rotation waiting for the
			// server to accept the new credential, or a server that is down or refuses us.
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

// sameCredentials reports whether a and b log in as the same user.
func sameCredentials(a, b *Credentials, useJWT bool) bool {
	switch {
	case a == nil || b == nil:
		return a == b
	case useJWT:
		return a.PublicKey() == b.PublicKey() && a.JWT() == b.JWT()
	default:
		return a.PublicKey() == b.PublicKey()
	}
}

// open starts a connection that retries in the background until the server answers, and
// subscribes on it.
func (s *Service) open(creds *Credentials, replaces bool) (*session, error) {
	sess := &session{ready: make(chan struct{}), creds: creds, opened: time.Now(), replaces: replaces}
	sess.downSince.Store(sess.opened.UnixNano())
	opts := []nats.Option{
		nats.Name(s.cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(s.cfg.ReconnectWait),
		nats.ReconnectJitter(s.cfg.ReconnectWait/2, s.cfg.ReconnectWait),
		// Keep trying through authorization errors: during a credential rotation the server may
		// briefly not know the new key yet.
		nats.IgnoreAuthErrorAbort(),
		nats.ConnectHandler(func(nc *nats.Conn) {
			if sess.retiring.Load() {
				return
			}
			sess.downSince.Store(0)
			if sess.replaces && s.cfg.Metrics != nil {
				s.cfg.Metrics.reconnects.Inc()
			}
			s.log.Info("connected to nats-server", "url", s.url, "server", nc.ConnectedServerName(), "user", sess.pub)
			s.confirm(sess)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if sess.retiring.Load() {
				return
			}
			sess.downSince.Store(0)
			if s.cfg.Metrics != nil {
				s.cfg.Metrics.reconnects.Inc()
			}
			s.log.Info("reconnected to nats-server", "url", s.url, "server", nc.ConnectedServerName(), "user", sess.pub)
			s.confirm(sess)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if sess.retiring.Load() {
				return
			}
			sess.downSince.Store(time.Now().UnixNano())
			if s.cfg.Metrics != nil {
				s.cfg.Metrics.disconnects.Inc()
			}
			s.log.Warn("disconnected from nats-server; reconnecting", "url", s.url, "user", sess.pub, "error", errString(err))
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if sess.retiring.Load() {
				return
			}
			s.connError(sess, slog.LevelWarn, "cannot reach nats-server; retrying", err)
		}),
		nats.ClosedHandler(func(_ *nats.Conn) {
			if sess.retiring.Load() {
				return
			}
			select {
			case s.closed <- struct{}{}:
			default:
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if sess.retiring.Load() {
				return
			}
			s.connError(sess, slog.LevelError, "NATS connection error", err)
		}),
	}
	if creds != nil {
		sess.pub = creds.PublicKey()
		if s.cfg.UseJWT {
			if creds.JWT() == "" {
				return nil, errors.New("callout: operator mode needs a .creds file with a user JWT, not a bare seed")
			}
			opts = append(opts, nats.UserJWT(func() (string, error) { return creds.JWT(), nil }, creds.Sign))
		} else {
			opts = append(opts, nats.Nkey(creds.PublicKey(), creds.Sign))
		}
	}
	if t := s.cfg.TLS; t != nil {
		// Secure first: RootCAs and ClientCert keep the tls.Config they find.
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}))
		if t.CAFile != "" {
			opts = append(opts, nats.RootCAs(t.CAFile))
		}
		if t.CertFile != "" {
			opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
		}
	}
	nc, err := nats.Connect(s.cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("callout: connect to %s: %w", s.url, err)
	}
	sess.nc = nc
	sub, err := nc.QueueSubscribe(Subject, s.cfg.QueueGroup, func(m *nats.Msg) { s.receive(sess, m) })
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("callout: subscribe to %s: %w", Subject, err)
	}
	// receive never blocks, so requests wait here only for the delivery goroutine to be
	// scheduled; a burst must not be cut by a message limit (nats.go would drop the excess
	// silently, as a slow consumer). The byte limit only guards against a stalled process.
	_ = sub.SetPendingLimits(-1, 64<<20)
	sess.sub = sub
	sess.subscribed.Store(true)
	if nc.IsConnected() {
		s.confirm(sess)
	}
	return sess, nil
}

// receive hands a request to the workers without blocking the connection's delivery: a
// request that cannot be queued is dropped now, while its arrival time is still known, instead
// of waiting unmeasured in the client library until its server has given up on it.
func (s *Service) receive(sess *session, m *nats.Msg) {
	at := time.Now()
	sess.mu.Lock()
	if sess.stopped {
		// Only after a drain that timed out: the server has stopped sending to this session.
		sess.mu.Unlock()
		s.log.Debug("callout request arrived on a retired connection; not answered")
		return
	}
	sess.inflight.Add(1)
	sess.mu.Unlock()
	select {
	case s.work <- job{msg: m, sess: sess, at: at}:
	default:
		sess.inflight.Done()
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.dropped(ReasonOverloaded)
		}
		if ok, suppressed := s.overload.allow("queue full", at); ok {
			s.log.Warn("callout request queue full; dropping requests until workers catch up",
				"queue_size", s.cfg.QueueSize, "workers", s.cfg.Workers, "dropped_since_last_report", suppressed+1)
		}
	}
}

// connError counts an error reported by the connection and logs it, each distinct message at
// most once per repeatLogPeriod.
func (s *Service) connError(sess *session, level slog.Level, msg string, err error) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.errors.Inc()
	}
	text := errString(err)
	if ok, suppressed := sess.errLog.allow(text, time.Now()); ok {
		attrs := []any{"url", s.url, "user", sess.pub, "error", text, "repeated", suppressed}
		if hint := tlsHint(text); hint != "" {
			attrs = append(attrs, "hint", hint)
		}
		s.log.Log(context.Background(), level, msg, attrs...)
	}
}

// tlsHint explains the TLS failures a sidecar dialing 127.0.0.1 meets, from nats.go's error
// text (which does not wrap the x509 error).
func tlsHint(text string) string {
	switch {
	case strings.Contains(text, "x509: cannot validate certificate for") || strings.Contains(text, "x509: certificate is valid for"):
		return "nats-server's certificate does not name the address dialed: set NATS_TLS_SERVER_NAME to a DNS name in it (e.g. the NATS Service's)"
	case strings.Contains(text, "x509: certificate signed by unknown authority"):
		return "set NATS_TLS_CA_FILE to the CA that signed nats-server's certificate"
	case strings.Contains(text, "secure connection required"):
		return "nats-server requires TLS: set NATS_TLS_CA_FILE (and NATS_TLS_SERVER_NAME)"
	case strings.Contains(text, "certificate required") || strings.Contains(text, "bad certificate"):
		return "nats-server verifies clients: set NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE"
	}
	return ""
}

// confirm marks a session ready once a round trip proves the server has its subscription.
func (s *Service) confirm(sess *session) {
	if !sess.subscribed.Load() || sess.isReady() {
		return
	}
	go func() {
		if sess.nc.FlushTimeout(readyFlushTimeout) != nil {
			// Disconnected again; the next (re)connect confirms.
			return
		}
		sess.once.Do(func() { close(sess.ready) })
	}()
}

func (sess *session) isReady() bool {
	select {
	case <-sess.ready:
		return true
	default:
		return false
	}
}

// retire stops a session taking requests, answers those it already received, then closes it.
func (s *Service) retire(sess *session) {
	sess.retiring.Store(true)
	if sess.nc.IsConnected() && sess.sub.IsValid() {
		closed := sess.sub.StatusChanged(nats.SubscriptionClosed)
		// Drain tells the server to stop sending and still delivers what is buffered here.
		if err := sess.sub.Drain(); err == nil {
			select {
			case <-closed:
			case <-time.After(s.cfg.RequestTimeout + time.Second):
				s.log.Warn("callout subscription did not drain in time", "user", sess.pub)
			}
		}
	}
	sess.mu.Lock()
	sess.stopped = true
	sess.mu.Unlock()
	sess.inflight.Wait()
	if sess.nc.IsConnected() {
		if err := sess.nc.FlushTimeout(time.Second); err != nil {
			s.log.Debug("flush before close", "error", err)
		}
	}
	sess.nc.Close()
}

func (s *Service) worker(ctx context.Context) {
	for j := range s.work {
		s.serve(ctx, j)
	}
}

func (s *Service) serve(ctx context.Context, j job) {
	defer j.sess.inflight.Done()
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

// TLSFiles are the files of the service's TLS connection to nats-server.
type TLSFiles struct {
	// CAFile verifies the server's certificate; empty means the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate, for a server that verifies clients.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry. The sidecar dials
	// 127.0.0.1, which a certificate rarely names; empty means the URL's host.
	ServerName string
}

// Check loads every file once, so that a wrong path or a bad PEM stops start-up with the
// setting named instead of failing every connection attempt.
func (t *TLSFiles) Check() error {
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return fmt.Errorf("NATS_TLS_CA_FILE: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("NATS_TLS_CA_FILE: %s holds no PEM certificate", t.CAFile)
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return errors.New("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together: a client certificate needs its key")
	case t.CertFile != "":
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			// The error names files and PEM structure, never key material.
			return fmt.Errorf("NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE: %w", err)
		}
	}
	return nil
}

// RedactURL returns a NATS URL (or comma-separated list) fit for logs: a password becomes
// "xxxxx", and a bare user part, which nats.go sends as a token, is dropped entirely.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil {
			// url.Parse errors quote their input; say only that it did not parse.
			parts[i] = "(unparseable URL)"
			continue
		}
		if u.User != nil {
			if _, hasPass := u.User.Password(); hasPass {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			} else {
				u.User = url.User("xxxxx")
			}
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// repeatLog lets a repeated log line through at most once per repeatLogPeriod per key and
// counts what it held back.
type repeatLog struct {
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

func (r *repeatLog) allow(key string, now time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil || len(r.last) > 64 {
		// Keys are a handful of fixed messages; the bound only guards against surprises.
		r.last, r.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if last, ok := r.last[key]; ok && now.Sub(last) < repeatLogPeriod {
		r.suppressed[key]++
		return false, 0
	}
	n := r.suppressed[key]
	r.last[key], r.suppressed[key] = now, 0
	return true, n
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
