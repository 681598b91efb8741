//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Scenario 1: a ServiceAccount annotated as in the README gets exactly its grant, checked
// with a fresh connection (so a fresh callout) per subject.
func TestAnnotatedServiceAccount(t *testing.T) {
	d := newDeployment(t, deployOpts{})
	ns := newNamespace(t, "perm")
	// The README's example, in namespace "perm".
	newServiceAccount(t, ns, "orders", map[string]string{
		"nats.io/allowed-pub-subjects": "events.orders.>, audit.perm",
		"nats.io/allowed-sub-subjects": "commands.orders.*",
		"nats.io/denied-pub-subjects":  "perm.internal.>",
	})
	newServiceAccount(t, ns, "prices", nil)
	orders, prices := token(t, ns, "orders"), token(t, ns, "prices")
	connectWhenKnown(t, d.nats.url(), orders).Close()
	connectWhenKnown(t, d.nats.url(), prices).Close()
	obs := newObserver(t, d.nats.url())
	url := d.nats.url()

	t.Run("allowed publishes are delivered", func(t *testing.T) {
		for _, subj := range []string{"perm.orders.created", "perm.a.b.c", "events.orders.created", "events.orders.eu.created", "audit.perm"} {
			payload := "p-" + randomHex(4)
			if err := tryPublish(t, url, orders, subj, payload); err != nil {
				t.Errorf("publish %q: %v", subj, err)
				continue
			}
			if m := obs.next(t, subj); string(m.Data) != payload {
				t.Errorf("publish %q: delivered %q, want %q", subj, m.Data, payload)
			}
		}
	})

	t.Run("other publishes are refused and not delivered", func(t *testing.T) {
		for i, subj := range []string{"other.x", "perm", "perm.internal.secret", "events.payments.created", "events.orders", "audit.perm.more", "audit", "_INBOX.x", "_INBOX_perm_prices.x", "$SYS.REQ.USER.AUTH"} {
			sentinel := fmt.Sprintf("perm.sentinel.%d", i)
			err := tryPublish(t, url, orders, subj, "nope", func(nc *nats.Conn) {
				if err := nc.Publish(sentinel, nil); err != nil {
					t.Fatal(err)
				}
			})
			wantViolation(t, err, "publish", subj)
			obs.notBefore(t, subj, sentinel)
		}
	})

	t.Run("allowed subscriptions receive", func(t *testing.T) {
		for _, c := range []struct{ sub, pub string }{
			{"perm.>", "perm.x.y"},
			{"commands.orders.*", "commands.orders.cancel"},
			{"_INBOX_perm_orders.>", "_INBOX_perm_orders.abc.1"},
		} {
			nc := connect(t, url, orders)
			sub, err := nc.SubscribeSync(c.sub)
			if err != nil {
				t.Fatal(err)
			}
			if err := flushErr(nc); err != nil {
				t.Errorf("subscribe %q: %v", c.sub, err)
				continue
			}
			payload := randomHex(4)
			if err := obs.nc.Publish(c.pub, []byte(payload)); err != nil {
				t.Fatal(err)
			}
			m, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Errorf("subscribe %q: nothing received from %q: %v", c.sub, c.pub, err)
			} else if string(m.Data) != payload {
				t.Errorf("subscribe %q: got %q, want %q", c.sub, m.Data, payload)
			}
			nc.Close()
		}
	})

	t.Run("other subscriptions are refused", func(t *testing.T) {
		for _, subj := range []string{">", "other.>", "perm", "commands.orders.a.b", "commands.>", "events.orders.>", "_INBOX.>", "_INBOX_perm_prices.>", "_INBOX_perm_orders"} {
			wantViolation(t, trySubscribe(t, url, orders, subj), "subscribe", subj)
		}
	})

	t.Run("publish and subscribe round trip between workloads", func(t *testing.T) {
		sub := connect(t, url, orders)
		s, err := sub.SubscribeSync("perm.orders.*")
		if err != nil {
			t.Fatal(err)
		}
		if err := flushErr(sub); err != nil {
			t.Fatal(err)
		}
		pub := connect(t, url, prices)
		if err := pub.Publish("perm.orders.priced", []byte("42")); err != nil {
			t.Fatal(err)
		}
		if err := flushErr(pub); err != nil {
			t.Fatal(err)
		}
		m, err := s.NextMsg(5 * time.Second)
		if err != nil || string(m.Data) != "42" {
			t.Fatalf("round trip: got %v, %v", m, err)
		}
	})

	t.Run("request and reply through the private inbox", func(t *testing.T) {
		responder := connect(t, url, prices)
		if _, err := responder.Subscribe("perm.prices.get", func(m *nats.Msg) {
			_ = m.Respond([]byte("price:" + string(m.Data)))
		}); err != nil {
			t.Fatal(err)
		}
		if err := flushErr(responder); err != nil {
			t.Fatal(err)
		}
		requester := connect(t, url, orders, nats.CustomInboxPrefix("_INBOX_perm_orders"))
		reply, err := requester.Request("perm.prices.get", []byte("apple"), 5*time.Second)
		if err != nil {
			t.Fatalf("request with the private inbox prefix: %v", err)
		}
		if string(reply.Data) != "price:apple" {
			t.Errorf("reply %q", reply.Data)
		}

		// The default _INBOX prefix is nobody's: the reply subscription is refused.
		plain := connect(t, url, orders)
		if _, err := plain.Request("perm.prices.get", []byte("pear"), 2*time.Second); err == nil {
			t.Error("request with the default _INBOX prefix succeeded; the shared inbox must be closed")
		}
		if err := plain.LastError(); !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("request with the default _INBOX prefix: last error %v, want a permissions violation", err)
		}
	})

	t.Run("a responder answers once, not twice", func(t *testing.T) {
		requester := connect(t, url, orders)
		got := make(chan *nats.Msg, 16)
		inbox := "_INBOX_perm_orders.once." + randomHex(4)
		for _, s := range []string{inbox, "perm.sentinel.reply"} {
			if _, err := requester.ChanSubscribe(s, got); err != nil {
				t.Fatal(err)
			}
		}
		if err := flushErr(requester); err != nil {
			t.Fatal(err)
		}

		responder := connect(t, url, prices)
		secondErr := make(chan error, 1)
		if _, err := responder.Subscribe("perm.prices.once", func(m *nats.Msg) {
			_ = m.Respond([]byte("first"))
			_ = m.Respond([]byte("second"))
			err := flushErr(responder)
			// After the refused reply, on the same connection: arrives after "first" and
			// would arrive after "second" had that been delivered.
			_ = responder.Publish("perm.sentinel.reply", nil)
			_ = responder.Flush()
			secondErr <- err
		}); err != nil {
			t.Fatal(err)
		}
		if err := flushErr(responder); err != nil {
			t.Fatal(err)
		}
		if err := requester.PublishRequest("perm.prices.once", inbox, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-secondErr:
			wantViolation(t, err, "second reply to", inbox)
		case <-time.After(5 * time.Second):
			t.Fatal("the responder never got the request")
		}
		var replies []string
		for done := false; !done; {
			select {
			case m := <-got:
				if m.Subject == inbox {
					replies = append(replies, string(m.Data))
				} else {
					done = true
				}
			case <-time.After(5 * time.Second):
				t.Fatal("sentinel not received")
			}
		}
		if len(replies) != 1 || replies[0] != "first" {
			t.Errorf("replies delivered: %q, want exactly [first]", replies)
		}
	})
}

// ANNOTATION_SUBJECT_LIMIT: allow annotations reaching outside the limit are dropped (and the
// decision log says so); the ones inside and the defaults still work. (The suite's observer,
// granted ">" by annotation, is limited too here, so a ServiceAccount inside the limit witnesses
// the deliveries; refused publishes are shown by the server's permissions violation.)
func TestAnnotationSubjectLimit(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, deployOpts{serviceEnv: []string{"ANNOTATION_SUBJECT_LIMIT={namespace}.>,shared.*"}})
	ns := newNamespace(t, "limit")
	newServiceAccount(t, ns, "greedy", map[string]string{
		"nats.io/allowed-pub-subjects": "shared.news, other.x, >, _INBOX_perm_orders.x",
		"nats.io/allowed-sub-subjects": "shared.*, _INBOX.>",
	})
	newServiceAccount(t, ns, "witness", map[string]string{"nats.io/allowed-sub-subjects": "shared.*"})
	tok := token(t, ns, "greedy")
	url := d.nats.url()
	connectWhenKnown(t, url, tok).Close()
	witness := connectWhenKnown(t, url, token(t, ns, "witness"))
	defer witness.Close()
	got := make(chan *nats.Msg, 16)
	for _, subj := range []string{"limit.>", "shared.*"} {
		if _, err := witness.ChanSubscribe(subj, got); err != nil {
			t.Fatal(err)
		}
	}
	if err := flushErr(witness); err != nil {
		t.Fatalf("witness subscriptions inside the limit: %v", err)
	}

	for _, subj := range []string{"limit.x", "shared.news"} {
		payload := "p-" + randomHex(4)
		if err := tryPublish(t, url, tok, subj, payload); err != nil {
			t.Errorf("publish %q (inside the limit): %v", subj, err)
			continue
		}
		select {
		case m := <-got:
			if m.Subject != subj || string(m.Data) != payload {
				t.Errorf("publish %q: witness got %q on %q", subj, m.Data, m.Subject)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("publish %q: not delivered", subj)
		}
	}
	for _, subj := range []string{"other.x", "anything.else", "_INBOX_perm_orders.x", "shared.a.b"} {
		wantViolation(t, tryPublish(t, url, tok, subj, "nope"), "publish", subj)
	}
	if err := trySubscribe(t, url, tok, "shared.news"); err != nil {
		t.Errorf("subscribe shared.news (inside the limit): %v", err)
	}
	wantViolation(t, trySubscribe(t, url, tok, "_INBOX.x"), "subscribe", "_INBOX.x")
	eventually(t, 10*time.Second, "dropped grants in the decision log", func() error {
		if log := d.svc.p.log(); !strings.Contains(log, `dropped \"other.x\": outside the annotation subject limit limit.>,shared.*`) {
			return errors.New("no warning about other.x in the service log")
		}
		return nil
	})
}

// `explain` run as the sidecar would run it (its kubeconfig, its RBAC) reads the ServiceAccount
// from the API server and shows what a decision grants, uid included.
func TestExplainAgainstCluster(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, "explain")
	sa := newServiceAccount(t, ns, "orders", map[string]string{
		"nats.io/allowed-pub-subjects": "events.orders.>, bad..entry",
		"nats.io/denied-pub-subjects":  "explain.internal.>",
	})
	explain := func(args ...string) ([]byte, error) {
		cmd := exec.Command(suite.serviceBin, append([]string{"explain"}, args...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + testDir(t), "K8S_IN_CLUSTER=false", "KUBECONFIG=" + suite.serviceKubeconfig}
		return cmd.CombinedOutput()
	}
	out, err := explain(ns+"/orders", "events.orders.created", "explain.internal.x", "other.x")
	if err != nil {
		t.Fatalf("explain: %v\n%s", err, out)
	}
	for _, want := range []string{
		ns + "/orders (uid " + string(sa.UID) + ")",
		"publish    allow  explain.>  events.orders.>",
		"deny   explain.internal.>",
		`ignored    nats.io/allowed-pub-subjects: dropped "bad..entry"`,
		"events.orders.created: publish allowed",
		"explain.internal.x: publish refused",
		"other.x: publish refused, subscribe refused",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
	if out, err := explain(ns + "/nobody"); err == nil || !strings.Contains(string(out), "not found") {
		t.Errorf("explain of a missing ServiceAccount: %v\n%s", err, out)
	}
}
