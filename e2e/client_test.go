//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// dial connects once, without reconnecting: each call is one connection attempt, so one
// callout decision.
func dial(url string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(url, append([]nats.Option{
		nats.MaxReconnects(0),
		nats.Timeout(5 * time.Second),
		nats.Name("e2e-client"),
		// Tests read errors from LastError (or install their own handler); the default one
		// only prints them.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	}, opts...)...)
}

// connect connects with a ServiceAccount token and fails the test if refused.
func connect(t *testing.T, url, tok string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := dial(url, append([]nats.Option{nats.Token(tok)}, opts...)...)
	if err != nil {
		t.Fatalf("connect with a valid token: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// connectWhenKnown connects with the token of a ServiceAccount created moments ago: the
// service's informer sees it shortly after the API server does, so it polls until allowed.
func connectWhenKnown(t *testing.T, url, tok string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	var nc *nats.Conn
	eventually(t, 15*time.Second, "connect with a new ServiceAccount's token", func() error {
		var err error
		nc, err = dial(url, append([]nats.Option{nats.Token(tok)}, opts...)...)
		return err
	})
	t.Cleanup(nc.Close)
	return nc
}

// flushErr flushes and returns the connection's last error: a permissions violation for what
// was sent before the flush arrives before the PONG that ends it.
func flushErr(nc *nats.Conn) error {
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return err
	}
	return nc.LastError()
}

// tryPublish publishes on a fresh connection and reports a permissions violation, if any.
func tryPublish(t *testing.T, url, tok, subject, payload string, then ...func(*nats.Conn)) error {
	t.Helper()
	nc, err := dial(url, nats.Token(tok))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish(subject, []byte(payload)); err != nil {
		return err
	}
	for _, f := range then {
		f(nc)
	}
	return flushErr(nc)
}

// trySubscribe subscribes on a fresh connection and reports a permissions violation, if any.
func trySubscribe(t *testing.T, url, tok, subject string) error {
	t.Helper()
	nc, err := dial(url, nats.Token(tok))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	if _, err := nc.SubscribeSync(subject); err != nil {
		return err
	}
	return flushErr(nc)
}

// wantViolation checks that err is a permissions violation naming subject.
func wantViolation(t *testing.T, err error, what, subject string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s %q: allowed, want a permissions violation", what, subject)
	case !errors.Is(err, nats.ErrPermissionViolation):
		t.Errorf("%s %q: %v, want a permissions violation", what, subject, err)
	case !strings.Contains(err.Error(), fmt.Sprintf("%q", subject)):
		t.Errorf("%s %q: violation for something else: %v", what, subject, err)
	}
}

// observer is a client of the witness ServiceAccount (publish and subscribe `>`), subscribed to
// everything in the target account. Messages arrive on one channel in the order the server
// sent them.
type observer struct {
	nc *nats.Conn
	ch chan *nats.Msg
}

func newObserver(t *testing.T, url string) *observer {
	t.Helper()
	o := &observer{ch: make(chan *nats.Msg, 4096)}
	o.nc = connect(t, url, suite.observerToken, nats.Name("e2e-observer"))
	if _, err := o.nc.ChanSubscribe(">", o.ch); err != nil {
		t.Fatal(err)
	}
	if err := flushErr(o.nc); err != nil {
		t.Fatal(err)
	}
	return o
}

// next returns the next message on subject, skipping others, or fails after 5 s.
func (o *observer) next(t *testing.T, subject string) *nats.Msg {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-o.ch:
			if m.Subject == subject {
				return m
			}
		case <-timeout:
			t.Fatalf("observer: no message on %q within 5s", subject)
			return nil
		}
	}
}

// notBefore checks that nothing arrives on subject before the next message on sentinel: the
// publisher sent the sentinel after it, on the same connection, so the server delivers them in
// that order if it delivers both.
func (o *observer) notBefore(t *testing.T, subject, sentinel string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-o.ch:
			switch m.Subject {
			case subject:
				t.Errorf("message on %q was delivered", subject)
			case sentinel:
				return
			}
		case <-timeout:
			t.Fatalf("observer: sentinel %q not received within 5s", sentinel)
		}
	}
}
