//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// cliRun is one finished NATS CLI invocation.
type cliRun struct {
	exit   int
	output string // stdout and stderr
	took   time.Duration
}

// natsCLI runs the NATS CLI with a clean home (no saved contexts) and fails the test if it
// does not exit within 30 s.
func natsCLI(t *testing.T, args ...string) cliRun {
	t.Helper()
	r, err := runNATSCLI(testDir(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runNATSCLI is natsCLI for other goroutines than the test's.
func runNATSCLI(dir string, args ...string) (cliRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	home := filepath.Join(dir, "cli-home")
	cmd := exec.CommandContext(ctx, suite.natsCLI, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := cliRun{output: out.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return r, fmt.Errorf("nats %s: did not exit within 30s\n%s", redact(args), r.output)
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	case err != nil:
		return r, fmt.Errorf("nats %s: %w", redact(args), err)
	}
	return r, nil
}

// redact hides the value of --token in messages.
func redact(args []string) string {
	out := append([]string(nil), args...)
	for i := range out {
		if i > 0 && out[i-1] == "--token" {
			out[i] = "<token>"
		}
	}
	return strings.Join(out, " ")
}

// Scenario 2: the NATS CLI as the client, with exactly the commands the README gives users.
func TestNATSCLI(t *testing.T) {
	d := newDeployment(t, deployOpts{})
	ns := newNamespace(t, "shop")
	newServiceAccount(t, ns, "orders", map[string]string{
		"nats.io/allowed-pub-subjects": "events.orders.>, audit.shop",
		"nats.io/allowed-sub-subjects": "commands.orders.*",
		"nats.io/denied-pub-subjects":  "shop.internal.>",
	})
	newServiceAccount(t, ns, "prices", nil)
	server := d.nats.url()

	// TOKEN=$(kubectl -n shop create token orders --audience nats)
	tok := kubectlToken(t, ns, "orders", "nats")
	connectWhenKnown(t, server, tok).Close()
	connectWhenKnown(t, server, token(t, ns, "prices")).Close()
	obs := newObserver(t, server)

	ok := func(t *testing.T, r cliRun, what string) {
		t.Helper()
		if r.exit != 0 {
			t.Errorf("%s: exit %d, want 0\n%s", what, r.exit, r.output)
		}
	}
	refused := func(t *testing.T, r cliRun, what, want string) {
		t.Helper()
		if r.exit == 0 {
			t.Errorf("%s: exit 0, want a failure\n%s", what, r.output)
		} else if !strings.Contains(r.output, want) {
			t.Errorf("%s: exit %d without %q in its output:\n%s", what, r.exit, want, r.output)
		}
	}

	t.Run("pub", func(t *testing.T) {
		// nats --server ... --token "$TOKEN" pub shop.orders.created '{"id":1}'
		ok(t, natsCLI(t, "--server", server, "--token", tok, "pub", "shop.orders.created", `{"id":1}`), "pub shop.orders.created")
		if m := obs.next(t, "shop.orders.created"); string(m.Data) != `{"id":1}` {
			t.Errorf("delivered %q", m.Data)
		}
		ok(t, natsCLI(t, "--server", server, "--token", tok, "pub", "events.orders.created", "x"), "pub events.orders.created")
		obs.next(t, "events.orders.created")

		refused(t, natsCLI(t, "--server", server, "--token", tok, "pub", "other.x", "x"), "pub other.x", "Permissions Violation")
		refused(t, natsCLI(t, "--server", server, "--token", tok, "pub", "shop.internal.x", "x"), "pub shop.internal.x", "Permissions Violation")
	})

	t.Run("sub", func(t *testing.T) {
		// nats --server ... --token "$TOKEN" sub 'commands.orders.*', made to end after one
		// message with --count 1.
		done := make(chan cliRun, 1)
		dir := testDir(t)
		go func() {
			r, err := runNATSCLI(dir, "--server", server, "--token", tok, "sub", "commands.orders.*", "--count", "1")
			if err != nil {
				r.exit, r.output = -1, err.Error()
			}
			done <- r
		}()
		// The CLI subscribes at some point after it starts: publish until it has received one.
		var r cliRun
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case r = <-done:
				break wait
			case <-tick.C:
				if err := obs.nc.Publish("commands.orders.cancel", []byte("order-7")); err != nil {
					t.Fatal(err)
				}
			}
		}
		ok(t, r, "sub commands.orders.* --count 1")
		if !strings.Contains(r.output, "order-7") {
			t.Errorf("sub printed no message:\n%s", r.output)
		}

		// A refused subscription ends the CLI with an error at once (it flushes and checks the
		// connection's last error), rather than waiting for messages that never come.
		refused(t, natsCLI(t, "--server", server, "--token", tok, "sub", "other.>"), "sub other.>", "Permissions Violation")
		refused(t, natsCLI(t, "--server", server, "--token", tok, "sub", "_INBOX.>"), "sub _INBOX.>", "Permissions Violation")
	})

	t.Run("req", func(t *testing.T) {
		responder := connect(t, server, token(t, ns, "prices"))
		if _, err := responder.Subscribe("shop.prices.get", func(m *nats.Msg) { _ = m.Respond([]byte("price=7")) }); err != nil {
			t.Fatal(err)
		}
		if err := flushErr(responder); err != nil {
			t.Fatal(err)
		}
		// nats --server ... --token "$TOKEN" --inbox-prefix _INBOX_shop_orders req shop.prices.get ''
		r := natsCLI(t, "--server", server, "--token", tok, "--inbox-prefix", "_INBOX_shop_orders", "req", "shop.prices.get", "")
		ok(t, r, "req --inbox-prefix _INBOX_shop_orders")
		if !strings.Contains(r.output, "price=7") {
			t.Errorf("req printed no reply:\n%s", r.output)
		}
		// Without the prefix the reply subscription (_INBOX.>) is refused and no reply
		// arrives. NATS CLI v0.5.0 `req` exits 0 when no reply comes (a timeout ends its
		// wait like a reply would), so the refusal shows only in its output.
		r = natsCLI(t, "--server", server, "--token", tok, "--timeout", "1s", "req", "shop.prices.get", "")
		if !strings.Contains(r.output, "Permissions Violation for Subscription to \"_INBOX.") || strings.Contains(r.output, "price=7") {
			t.Errorf("req without --inbox-prefix: want the reply subscription refused and no reply, got exit %d:\n%s", r.exit, r.output)
		}
	})

	t.Run("refused at connect", func(t *testing.T) {
		refused(t, natsCLI(t, "--server", server, "--token", "not-a-token", "pub", "shop.x", "x"), "pub with a bad token", "Authorization Violation")
		refused(t, natsCLI(t, "--server", server, "pub", "shop.x", "x"), "pub without a token", "Authorization Violation")
	})
}
