package callout

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

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

// open starts a connection that retries in the background until the server answers, and
// subscribes on it.
func (s *Service) open(creds *Credentials, replaces bool) (*session, error) {
	sess := &session{ready: make(chan struct{}), creds: creds, opened: time.Now(), replaces: replaces}
	sess.downSince.Store(sess.opened.UnixNano())
	opts := append([]nats.Option{
		nats.Name(s.cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(s.cfg.ReconnectWait),
		nats.ReconnectJitter(s.cfg.ReconnectWait/2, s.cfg.ReconnectWait),
		// Keep trying through authorization errors: during a credential rotation the server may
		// briefly not know the new key yet.
		nats.IgnoreAuthErrorAbort(),
	}, s.handlers(sess)...)
	login, err := s.loginOptions(sess, creds)
	if err != nil {
		return nil, err
	}
	opts = append(opts, login...)
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

// handlers follow a session's connection: they keep its state and metrics, log what happens
// and tell the run loop when nats.go gives up on it. A retiring session reports nothing.
func (s *Service) handlers(sess *session) []nats.Option {
	return []nats.Option{
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
}

// loginOptions are how the session logs in (nkey, or user JWT in operator mode) and its TLS.
func (s *Service) loginOptions(sess *session, creds *Credentials) ([]nats.Option, error) {
	if creds != nil {
		sess.pub = creds.PublicKey()
	}
	return LoginOptions(creds, s.cfg.UseJWT, s.cfg.TLS)
}

// LoginOptions are the nats.go options that log in with creds (its nkey, or with useJWT its user
// JWT; nil: no login of its own) over TLS as t says (nil: plain).
func LoginOptions(creds *Credentials, useJWT bool, t *TLSFiles) ([]nats.Option, error) {
	var opts []nats.Option
	if creds != nil {
		if useJWT {
			if creds.JWT() == "" {
				return nil, errors.New("callout: operator mode needs a .creds file with a user JWT, not a bare seed")
			}
			opts = append(opts, nats.UserJWT(func() (string, error) { return creds.JWT(), nil }, creds.Sign))
		} else {
			opts = append(opts, nats.Nkey(creds.PublicKey(), creds.Sign))
		}
	}
	if t != nil {
		// Secure first: RootCAs and ClientCert keep the tls.Config they find.
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}))
		if t.CAFile != "" {
			opts = append(opts, nats.RootCAs(t.CAFile))
		}
		if t.CertFile != "" {
			opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
		}
	}
	return opts, nil
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

// receive hands a request to the workers without blocking the connection's delivery: it is
// queued with its arrival time, and when the queue is full the oldest queued request is dropped
// now rather than left to wait, unmeasured, in the client library until its server has given
// up on it.
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
	oldest, evicted := s.work.push(job{msg: m, sess: sess, at: at})
	if !evicted {
		return
	}
	// The queue was full: the oldest request made room for this one. It is the one whose
	// server and client are closest to giving up on it.
	oldest.sess.inflight.Done()
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.dropped(ReasonOverloaded)
	}
	if ok, suppressed := s.overload.allow("queue full", at); ok {
		s.log.Warn("callout request queue full; dropping requests until workers catch up",
			"queue_size", s.cfg.QueueSize, "workers", s.cfg.Workers, "oldest_waited_ms", at.Sub(oldest.at).Milliseconds(),
			"dropped_since_last_report", suppressed+1)
	}
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
		// Keys are a handful of messages (errString's, so at most maxLogText bytes each); the
		// bound only guards against surprises.
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

// errString is an error's text for a log line or a repeatLog key, clipped to maxLogText:
// connection errors quote what the server or the network sent.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return kube.Clip(err.Error(), maxLogText)
}
