//go:build e2e

package e2e

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Scenario 9: an account with its own static credentials (as NACK uses to manage JetStream),
// listed in auth_users, keeps working beside the callout and never reaches it; workloads are
// never placed in it.
func TestStaticAccount(t *testing.T) {
	t.Parallel()
	nack := &staticUser{account: "JS", user: "nack", password: randomHex(16)}
	d := newDeployment(t, deployOpts{static: nack})
	url := d.nats.url()
	ns := newNamespace(t, "static")
	newServiceAccount(t, ns, "worker", map[string]string{
		"nats.io/allowed-pub-subjects": "js.>",
		"nats.io/allowed-sub-subjects": "js.>",
	})
	tok := token(t, ns, "worker")
	connectWhenKnown(t, url, tok).Close()

	total := func() float64 { return d.svc.requests(t) }
	before := total()

	t.Run("the static user bypasses the callout", func(t *testing.T) {
		for range 5 {
			nc, err := dial(url, nats.UserInfo(nack.user, nack.password))
			if err != nil {
				t.Fatalf("static user: %v", err)
			}
			sub, err := nc.SubscribeSync("js.events")
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Publish("js.events", []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.NextMsg(5 * time.Second); err != nil {
				t.Errorf("static user's round trip: %v", err)
			}
			nc.Close()
		}
		// A wrong password is refused by nats-server itself: auth_users never go to the
		// callout, not even with a ServiceAccount token as the password.
		for _, pass := range []string{"wrong", tok} {
			nc, err := dial(url, nats.UserInfo(nack.user, pass))
			if err == nil {
				nc.Close()
				t.Error("static user with a wrong password got in")
			} else if !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("static user with a wrong password: %v, want an authorization violation", err)
			}
		}
		if got := total(); got != before {
			t.Errorf("callout requests went from %g to %g: the static user reached the callout; %s", before, got, d.svc.metrics(t).requestsString())
		}
	})

	t.Run("workloads are placed in APP, never in the static account", func(t *testing.T) {
		worker := connect(t, url, tok, nats.Name("worker"))
		if got := total(); got != before+1 {
			t.Errorf("callout requests went from %g to %g after one workload connection", before, got)
		}
		static, err := dial(url, nats.UserInfo(nack.user, nack.password), nats.Name("nack"))
		if err != nil {
			t.Fatal(err)
		}
		defer static.Close()
		conns, err := d.nats.connz()
		if err != nil {
			t.Fatal(err)
		}
		accounts := map[string]string{}
		for _, c := range conns {
			accounts[c.Name] = c.Account
		}
		if accounts["worker"] != "APP" || accounts["nack"] != "JS" {
			t.Errorf("accounts by connection: %v, want worker in APP and nack in JS", accounts)
		}

		// Same subject, different accounts: nothing crosses.
		workerSub, err := worker.SubscribeSync("js.events")
		if err != nil {
			t.Fatal(err)
		}
		staticSub, err := static.SubscribeSync("js.events")
		if err != nil {
			t.Fatal(err)
		}
		for _, nc := range []*nats.Conn{worker, static} {
			if err := flushErr(nc); err != nil {
				t.Fatal(err)
			}
		}
		if err := static.Publish("js.events", []byte("from JS")); err != nil {
			t.Fatal(err)
		}
		if err := worker.Publish("js.events", []byte("from APP")); err != nil {
			t.Fatal(err)
		}
		for _, nc := range []*nats.Conn{static, worker, static, worker} {
			// Two rounds: each publish has been routed before either flush returns.
			if err := flushErr(nc); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			who  string
			sub  *nats.Subscription
			want string
		}{{"worker", workerSub, "from APP"}, {"nack", staticSub, "from JS"}} {
			m, err := c.sub.NextMsg(time.Second)
			if err != nil || string(m.Data) != c.want {
				t.Errorf("%s received %v, %v, want %q", c.who, m, err, c.want)
				continue
			}
			if n, _, _ := c.sub.Pending(); n != 0 {
				extra, _ := c.sub.NextMsg(time.Second)
				t.Errorf("%s also received %q from the other account", c.who, extra.Data)
			}
		}
	})
}
