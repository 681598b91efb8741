package devmode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// step is one --check step.
type step struct {
	name string
	// skip, if set, says why the ServiceAccounts give this step nothing to test.
	skip string
	run  func(ctx context.Context) (string, error)
}

// steps are the --check steps of the scenario; quick keeps only the allowed and the refused
// publish (what dev shows at start).
func (sc scenario) steps(issuerURL string, quick bool) []step {
	if sc.planErr != nil {
		return []step{{"scenario", "", func(context.Context) (string, error) { return "", sc.planErr }}}
	}
	p := sc.plan
	steps := []step{
		{"allowed publish delivered", "", sc.checkDelivered},
		{"refused publish", skipIf(p.Refused == "", p.Publisher.String()+" may publish everywhere"), sc.checkRefusedPublish},
	}
	if quick {
		return steps
	}
	return append(steps,
		step{"refused token: garbage", "", func(context.Context) (string, error) {
			return sc.checkRefusedToken("not-a-serviceaccount-token")
		}},
		step{"refused token: signed by another key", "", func(context.Context) (string, error) {
			other, err := kubefake.NewECDSATokenIssuer(issuerURL)
			if err != nil {
				return "", err
			}
			tok, err := other.ServiceAccountToken(p.Publisher.Namespace, p.Publisher.Name, sc.uid(p.Publisher), []string{audience}, time.Hour)
			if err != nil {
				return "", err
			}
			return sc.checkRefusedToken(tok)
		}},
		step{"refused token: unknown serviceaccount", "", func(context.Context) (string, error) {
			tok, err := sc.tokens.issuer.ServiceAccountToken("dev-check", "nobody", "00000000-0000-0000-0000-000000000000", []string{audience}, time.Hour)
			if err != nil {
				return "", err
			}
			return sc.checkRefusedToken(tok)
		}},
		step{"request/reply via private inbox", "", sc.checkRequest},
		step{"shared _INBOX refused", skipIf(!p.InboxRefused, p.Publisher.String()+" may subscribe to _INBOX.>"), sc.checkSharedInbox},
	)
}

// check runs the scenario with nats.go clients against the embedded server and writes one
// PASS, FAIL or SKIP line per step. It returns the number of failed steps. quick runs only the
// allowed and the refused publish (what dev shows at start).
func (sc scenario) check(ctx context.Context, w io.Writer, issuerURL string, quick bool) int {
	failed := 0
	for _, s := range sc.steps(issuerURL, quick) {
		if s.skip != "" {
			fmt.Fprintf(w, "SKIP %s: %s\n", s.name, s.skip)
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, stepTimeout)
		detail, err := s.run(sctx)
		cancel()
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(w, "FAIL %s: %v\n", s.name, err)
		default:
			fmt.Fprintf(w, "PASS %s: %s\n", s.name, detail)
		}
	}
	return failed
}

// skipIf returns why when cond holds, else "".
func skipIf(cond bool, why string) string {
	if cond {
		return why
	}
	return ""
}

func (sc scenario) uid(a account) string {
	for _, sa := range sc.tokens.current() {
		if sa.Namespace == a.Namespace && sa.Name == a.Name {
			return string(sa.UID)
		}
	}
	return ""
}

// connect dials as a workload whose token is read from its file at every connect, as the
// printed nats.go snippet does; asynchronous errors (permission violations) go to the channel.
func (sc scenario) connect(a account, customInbox bool) (*nats.Conn, <-chan error, error) {
	file := sc.tokenFile(a)
	errs := make(chan error, 8)
	opts := []nats.Option{
		nats.Name("dev --check as " + a.String()),
		nats.TokenHandler(func() string {
			b, _ := os.ReadFile(file)
			return strings.TrimSpace(string(b))
		}),
		nats.NoReconnect(),
		nats.Timeout(stepTimeout),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}),
	}
	if customInbox {
		opts = append(opts, nats.CustomInboxPrefix(kube.InboxPrefix(a.Namespace, a.Name)))
	}
	nc, err := nats.Connect(sc.url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect as %s: %w", a, err)
	}
	return nc, errs, nil
}

func (sc scenario) checkDelivered(ctx context.Context) (string, error) {
	p := sc.plan
	sub, subErrs, err := sc.connect(p.Responder, true)
	if err != nil {
		return "", err
	}
	defer sub.Close()
	msgs, err := sub.SubscribeSync(p.Subject)
	if err != nil {
		return "", err
	}
	if err := sub.FlushWithContext(ctx); err != nil {
		return "", err
	}
	pub, pubErrs, err := sc.connect(p.Publisher, true)
	if err != nil {
		return "", err
	}
	defer pub.Close()
	if err := pub.Publish(p.Subject, []byte("hello from dev --check")); err != nil {
		return "", err
	}
	if err := pub.FlushWithContext(ctx); err != nil {
		return "", err
	}
	if _, err := msgs.NextMsgWithContext(ctx); err != nil {
		select {
		case e := <-pubErrs:
			err = e
		case e := <-subErrs:
			err = e
		default:
		}
		return "", fmt.Errorf("%s published %s, %s received nothing: %w", p.Publisher, p.Subject, p.Responder, err)
	}
	return fmt.Sprintf("%s published %s, %s received it", p.Publisher, p.Subject, p.Responder), nil
}

func (sc scenario) checkRefusedPublish(ctx context.Context) (string, error) {
	p := sc.plan
	nc, errs, err := sc.connect(p.Publisher, true)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	if err := nc.Publish(p.Refused, []byte("must not arrive")); err != nil {
		return "", err
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return "", err
	}
	return waitViolation(ctx, errs, fmt.Sprintf("Publish to %q", p.Refused))
}

func (sc scenario) checkRefusedToken(token string) (string, error) {
	nc, err := nats.Connect(sc.url, nats.Token(token), nats.NoReconnect(), nats.Timeout(stepTimeout))
	if err == nil {
		nc.Close()
		return "", errors.New("the connection was accepted")
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		return "", fmt.Errorf("want an authorization violation, got: %w", err)
	}
	return err.Error(), nil
}

func (sc scenario) checkRequest(ctx context.Context) (string, error) {
	p := sc.plan
	resp, _, err := sc.connect(p.Responder, true)
	if err != nil {
		return "", err
	}
	defer resp.Close()
	answer := "answered by " + p.Responder.String()
	if _, err := resp.Subscribe(p.Subject, func(m *nats.Msg) { _ = m.Respond([]byte(answer)) }); err != nil {
		return "", err
	}
	if err := resp.FlushWithContext(ctx); err != nil {
		return "", err
	}
	req, errs, err := sc.connect(p.Publisher, true)
	if err != nil {
		return "", err
	}
	defer req.Close()
	msg, err := req.RequestWithContext(ctx, p.Subject, []byte("hello"))
	if err != nil {
		select {
		case e := <-errs:
			err = fmt.Errorf("%w (%w)", err, e)
		default:
		}
		return "", fmt.Errorf("%s asked on %s with inbox %s: %w", p.Publisher, p.Subject, kube.InboxPrefix(p.Publisher.Namespace, p.Publisher.Name), err)
	}
	if string(msg.Data) != answer {
		return "", fmt.Errorf("reply %q, want %q", msg.Data, answer)
	}
	return fmt.Sprintf("%s asked on %s, %s answered to %s.*", p.Publisher, p.Subject, p.Responder, kube.InboxPrefix(p.Publisher.Namespace, p.Publisher.Name)), nil
}

func (sc scenario) checkSharedInbox(ctx context.Context) (string, error) {
	p := sc.plan
	nc, errs, err := sc.connect(p.Publisher, false)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	// The request itself cannot succeed; the check is that subscribing to the shared inbox
	// is refused, which arrives asynchronously.
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = nc.RequestWithContext(rctx, p.Subject, []byte("hello")) })
	detail, err := waitViolation(ctx, errs, `Subscription to "_INBOX.`)
	cancel()
	wg.Wait()
	return detail, err
}

// waitViolation waits for a permissions violation whose text contains what.
func waitViolation(ctx context.Context, errs <-chan error, what string) (string, error) {
	select {
	case err := <-errs:
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), what) {
			return err.Error(), nil
		}
		return "", fmt.Errorf("want a permissions violation for %s, got: %w", what, err)
	case <-ctx.Done():
		return "", fmt.Errorf("no permissions violation for %s within %s", what, stepTimeout)
	}
}
