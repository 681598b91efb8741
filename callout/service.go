package callout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultQueueGroup is the queue group every instance joins: nats-server prefers a local queue
// member, so each sidecar answers its own server and a peer takes over when it is gone.
const DefaultQueueGroup = "nats-k8s-oidc-callout"

// ServiceConfig configures the request loop and its NATS connection.
type ServiceConfig struct {
	// URL of nats-server; may carry user:password.
	URL string
	// Credentials returns the current login credential, or nil when URL carries one.
	Credentials func() *Credentials
	// UseJWT logs in with the credential's user JWT (operator mode) rather than its bare nkey
	// (server-config mode, where the server knows the service by `nkey`).
	UseJWT bool
	// Handler decides requests (required).
	Handler *Handler
	// Workers bounds concurrent requests; 0 means 4×GOMAXPROCS.
	Workers int
	// RequestTimeout bounds one request, and must be below the server's authorization timeout
	// (2 s by default); 0 means 1.5 s.
	RequestTimeout time.Duration
	// QueueGroup defaults to DefaultQueueGroup.
	QueueGroup string
	// Name is the NATS connection name.
	Name string
	// ReconnectWait between attempts; 0 means 1 s (with jitter).
	ReconnectWait time.Duration
	Logger        *slog.Logger
	Metrics       *Metrics
}

// Service answers callout requests on a NATS connection that it keeps up forever: it retries
// until nats-server is first reachable, reconnects after every outage, and replaces its
// connection when its credentials rotate without leaving a request unanswered.
type Service struct {
	cfg  ServiceConfig
	log  *slog.Logger
	work chan job

	rotate chan struct{}
	// lost receives a session whose connection closed without the service closing it.
	lost chan *session

	active atomic.Pointer[session]
}

type job struct {
	msg  *nats.Msg
	sess *session
	at   time.Time
}

// session is one NATS connection with its callout subscription.
type session struct {
	nc       *nats.Conn
	sub      *nats.Subscription
	pub      string
	inflight sync.WaitGroup
	retiring atomic.Bool
	// subscribed is set once sub exists; connection callbacks may run before that.
	subscribed atomic.Bool
	ready      chan struct{} // closed once connected and subscribed
	once       sync.Once
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
	return &Service{
		cfg:    cfg,
		log:    cfg.Logger,
		work:   make(chan job, cfg.Workers),
		rotate: make(chan struct{}, 1),
		lost:   make(chan *session, 4),
	}, nil
}

// Rotate tells the service its credentials changed. It opens a connection with the new ones,
// subscribes, and only then drains the old connection.
func (s *Service) Rotate() {
	select {
	case s.rotate <- struct{}{}:
	default:
	}
}

// Ready returns nil while the service is connected with an active callout subscription.
func (s *Service) Ready() error {
	sess := s.active.Load()
	switch {
	case sess == nil:
		return errors.New("nats: not started")
	case !sess.nc.IsConnected():
		return fmt.Errorf("nats: not connected to %s (%s)", s.cfg.URL, sess.nc.Status())
	case sess.sub == nil || !sess.sub.IsValid():
		return errors.New("nats: callout subscription not active")
	}
	return nil
}

// Run serves until ctx is done, then stops taking requests, answers those in flight, drains the
// connection and returns nil.
func (s *Service) Run(ctx context.Context) error {
	var workers, retiring sync.WaitGroup
	for range s.cfg.Workers {
		workers.Go(func() { s.worker(ctx) })
	}
	defer func() {
		// Retiring sessions may still hand requests to the workers.
		retiring.Wait()
		close(s.work)
		workers.Wait()
	}()

	cur, err := s.open()
	if err != nil {
		return err
	}
	s.active.Store(cur)
	var pending *session

	for {
		var pendingReady <-chan struct{}
		if pending != nil {
			pendingReady = pending.ready
		}
		select {
		case <-ctx.Done():
			if pending != nil {
				s.retire(pending)
			}
			s.retire(cur)
			s.setConnected(false)
			return nil

		case <-s.rotate:
			creds := s.cfg.Credentials()
			if creds != nil && creds.PublicKey() == cur.pub && !s.cfg.UseJWT {
				// Same nkey: the running connection is still valid.
				continue
			}
			if pending != nil {
				s.retire(pending)
			}
			next, err := s.open()
			if err != nil {
				s.log.Error("cannot open a connection with the new credentials; keeping the current one", "error", err)
				continue
			}
			s.log.Info("credentials changed: opening a new NATS connection before draining the old one", "user", next.pub)
			pending = next

		case <-pendingReady:
			old := cur
			cur, pending = pending, nil
			s.active.Store(cur)
			s.log.Info("new NATS connection subscribed; draining the old one", "user", cur.pub)
			retiring.Go(func() { s.retire(old) })

		case lost := <-s.lost:
			if lost != cur {
				continue
			}
			// A connection that closed on its own (the server kept refusing it, or nats.go gave
			// up) is replaced: the service must never sit healthy on a dead connection.
			s.log.Error("NATS connection closed; opening a new one")
			s.setConnected(false)
			next, err := s.open()
			if err != nil {
				return err
			}
			old := cur
			cur = next
			s.active.Store(cur)
			retiring.Go(func() { s.retire(old) })
		}
	}
}

// open starts a connection that retries in the background until the server answers.
func (s *Service) open() (*session, error) {
	sess := &session{ready: make(chan struct{})}
	opts := []nats.Option{
		nats.Name(s.cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(s.cfg.ReconnectWait),
		nats.ReconnectJitter(s.cfg.ReconnectWait/2, s.cfg.ReconnectWait),
		// Keep trying through authorization errors: during a credential rotation the server may
		// briefly not know the new key yet.
		nats.IgnoreAuthErrorAbort(),
		nats.ConnectHandler(func(nc *nats.Conn) { s.connectedEvent(sess, nc, "connected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if s.cfg.Metrics != nil {
				s.cfg.Metrics.reconnects.Inc()
			}
			s.connectedEvent(sess, nc, "reconnected")
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if sess.retiring.Load() {
				return
			}
			if s.cfg.Metrics != nil {
				s.cfg.Metrics.disconnect.Inc()
			}
			if s.active.Load() == sess {
				s.setConnected(false)
			}
			s.log.Warn("disconnected from nats-server", "url", s.cfg.URL, "error", errString(err))
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if sess.retiring.Load() {
				return
			}
			select {
			case s.lost <- sess:
			default:
			}
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if s.cfg.Metrics != nil {
				s.cfg.Metrics.errors.Inc()
			}
			s.log.Error("NATS connection error", "error", err)
		}),
	}
	if creds := s.cfg.Credentials(); creds != nil {
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
	nc, err := nats.Connect(s.cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("callout: connect to %s: %w", s.cfg.URL, err)
	}
	sess.nc = nc
	sub, err := nc.QueueSubscribe(Subject, s.cfg.QueueGroup, func(m *nats.Msg) {
		sess.inflight.Add(1)
		s.work <- job{msg: m, sess: sess, at: time.Now()}
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("callout: subscribe to %s: %w", Subject, err)
	}
	// Unbounded buffering would only queue requests the server has already given up on.
	_ = sub.SetPendingLimits(16384, 64<<20)
	sess.sub = sub
	sess.subscribed.Store(true)
	if nc.IsConnected() {
		s.connectedEvent(sess, nc, "connected")
	}
	return sess, nil
}

// connectedEvent marks a session ready once the server has seen its subscription.
func (s *Service) connectedEvent(sess *session, nc *nats.Conn, what string) {
	if sess.retiring.Load() {
		return
	}
	s.log.Info(what+" to nats-server", "url", s.cfg.URL, "server", nc.ConnectedServerName())
	if !sess.subscribed.Load() {
		// open reports again once the subscription exists.
		return
	}
	go func() {
		// A flush round trip proves the server has registered the subscription.
		if nc.FlushTimeout(5*time.Second) != nil {
			return
		}
		sess.once.Do(func() { close(sess.ready) })
		if s.active.Load() == sess {
			s.setConnected(true)
		}
	}()
}

// retire stops a session taking requests, answers those it already received, then closes it.
func (s *Service) retire(sess *session) {
	sess.retiring.Store(true)
	if sess.sub != nil && sess.sub.IsValid() {
		closed := sess.sub.StatusChanged(nats.SubscriptionClosed)
		// Drain tells the server to stop sending and still delivers what is buffered here.
		if err := sess.sub.Drain(); err == nil {
			select {
			case <-closed:
			case <-time.After(s.cfg.RequestTimeout + time.Second):
				s.log.Warn("callout subscription did not drain in time")
			}
		}
	}
	sess.inflight.Wait()
	if sess.nc.IsConnected() {
		if err := sess.nc.FlushTimeout(time.Second); err != nil {
			s.log.Debug("flush before close", "error", err)
		}
	}
	sess.nc.Close()
}

func (s *Service) setConnected(up bool) {
	if s.cfg.Metrics == nil {
		return
	}
	if up {
		s.cfg.Metrics.connected.Set(1)
	} else {
		s.cfg.Metrics.connected.Set(0)
	}
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

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
