//go:build !nodevserver

package devmode

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// runDev runs dev mode as the dev command does: its flags parsed, then Run.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := settings.ParseDev(args, stderr)
	if err != nil {
		return err
	}
	return Run(ctx, c, stdout, stderr, "test", "test")
}

func TestDevCheck(t *testing.T) {
	checkSteps := []string{
		"allowed publish delivered",
		"refused publish",
		"refused token: garbage",
		"refused token: signed by another key",
		"refused token: unknown serviceaccount",
		"request/reply via private inbox",
		"shared _INBOX refused",
	}
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"encrypted", nil},
		{"plain", []string{"--xkey=false"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var stdout, stderr testsupport.LogBuffer
			args := append([]string{"--check", "--manifest", exampleManifest, "--dir", dir, "--log-format", "json"}, tt.args...)
			if err := runDev(context.Background(), args, &stdout, &stderr); err != nil {
				t.Fatalf("dev --check failed: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
			out := stdout.String()
			for _, step := range checkSteps {
				if !strings.Contains(out, "PASS "+step+": ") {
					t.Errorf("no PASS line for %q in:\n%s", step, out)
				}
			}
			if strings.Contains(out, "FAIL") || strings.Contains(out, "SKIP") {
				t.Errorf("stdout has FAIL or SKIP lines:\n%s", out)
			}
			logs := stderr.String()
			for _, want := range []string{`"result":"allowed"`, `"reason":"malformed_token"`, `"reason":"bad_signature"`, `"reason":"serviceaccount_not_found"`} {
				if !strings.Contains(logs, want) {
					t.Errorf("decision logs lack %s:\n%s", want, logs)
				}
			}
			assertNoSecrets(t, dir, out+logs)
		})
	}
}

// assertNoSecrets checks that no seed or token written to dir appears in output.
func assertNoSecrets(t *testing.T, dir, output string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".nk") && !strings.HasSuffix(path, ".token") {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if mode := info.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %o, want 600", path, mode)
		}
		secret, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if s := strings.TrimSpace(string(secret)); s == "" || strings.Contains(output, s) {
			t.Errorf("the content of %s appears in the output (or is empty)", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDevCheckFails(t *testing.T) {
	// A ServiceAccount that may publish nothing leaves no scenario to run: that is a failure,
	// not a pass with nothing checked.
	manifest := writeManifest(t, t.TempDir(), `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: mute
  namespace: team
  annotations:
    nats.io/denied-pub-subjects: ">"
`)
	var stdout, stderr testsupport.LogBuffer
	err := runDev(context.Background(), []string{"--check", "--manifest", manifest, "--dir", t.TempDir()}, &stdout, &stderr)
	if err == nil {
		t.Fatalf("dev --check succeeded without a scenario\nstdout:\n%s", stdout.String())
	}
	if !strings.Contains(stdout.String(), "FAIL scenario: ") {
		t.Errorf("stdout lacks the FAIL line:\n%s", stdout.String())
	}
	// The command prints this error to stderr.
	if !strings.Contains(err.Error(), "dev --check: 1 step(s) failed") {
		t.Errorf("the error lacks the summary: %v", err)
	}
}

func writeManifest(t *testing.T, dir, content string) string {
	t.Helper()
	path := filepath.Join(dir, "serviceaccounts.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// devInstance is dev mode running in the background of a test.
type devInstance struct {
	url, dir string
	stdout   *testsupport.LogBuffer
}

// startDev runs dev mode on free ports until the test ends, with the example manifest unless
// args name one.
func startDev(t *testing.T, args ...string) *devInstance {
	t.Helper()
	d := &devInstance{dir: t.TempDir(), stdout: &testsupport.LogBuffer{}}
	var stderr testsupport.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if !slices.Contains(args, "--manifest") {
		args = append([]string{"--manifest", exampleManifest}, args...)
	}
	args = append([]string{"--dir", d.dir, "--port", "0", "--http-addr", "127.0.0.1:0"}, args...)
	go func() { done <- runDev(ctx, args, d.stdout, &stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev failed: %v\nstderr:\n%s", err, stderr.String())
		}
	})
	urlRE := regexp.MustCompile(`NATS URL\s+(nats://\S+)`)
	testsupport.WaitFor(t, "dev to print its instructions", 30*time.Second, func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("dev stopped before it was ready: %v\nstderr:\n%s", err, stderr.String())
		default:
		}
		return strings.Contains(d.stdout.String(), "Ctrl-C stops")
	})
	m := urlRE.FindStringSubmatch(d.stdout.String())
	if m == nil {
		t.Fatalf("no NATS URL in:\n%s", d.stdout.String())
	}
	d.url = m[1]
	return d
}

func (d *devInstance) tokenFile(ns, name string) string {
	return filepath.Join(d.dir, "tokens", ns, name+".token")
}

// connect logs in as a ServiceAccount with its token file; asynchronous errors go to the channel.
func (d *devInstance) connect(t *testing.T, ns, name string) (*nats.Conn, <-chan error, error) {
	t.Helper()
	tok, err := os.ReadFile(d.tokenFile(ns, name))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	nc, err := nats.Connect(d.url, nats.Token(string(tok)), nats.NoReconnect(),
		nats.CustomInboxPrefix(kube.InboxPrefix(ns, name)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, errs, err
}

// delivered reports whether a message from ns/pub on subject reaches ns2/sub, on fresh
// connections.
func (d *devInstance) delivered(t *testing.T, pubNS, pub, subNS, sub, subject string) bool {
	t.Helper()
	s, _, err := d.connect(t, subNS, sub)
	if err != nil {
		t.Fatalf("connect as %s/%s: %v", subNS, sub, err)
	}
	defer s.Close()
	msgs, err := s.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	p, _, err := d.connect(t, pubNS, pub)
	if err != nil {
		t.Fatalf("connect as %s/%s: %v", pubNS, pub, err)
	}
	defer p.Close()
	if err := p.Publish(subject, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	_, err = msgs.NextMsg(250 * time.Millisecond)
	return err == nil
}

func TestDevPrintsCommands(t *testing.T) {
	d := startDev(t)
	out := d.stdout.String()
	orders := d.tokenFile("shop", "orders")
	for _, want := range []string{
		"NATS URL       " + d.url,
		"nats -s " + d.url + ` --token "$(cat ` + orders + `)" pub billing.charges.create hello`,
		"nats -s " + d.url + ` --token "$(cat ` + orders + `)" pub billing.invoices.demo hello`,
		"--token not-a-serviceaccount-token",
		`--token "$(cat ` + d.tokenFile("billing", "payments") + `)" reply billing.charges.create`,
		"--inbox-prefix _INBOX_shop_orders req billing.charges.create hello",
		`export NATS_URL=` + d.url + ` NATS_TOKEN="$(cat ` + orders + `)"`,
		`nats.TokenHandler(func() string {`,
		`os.ReadFile("` + orders + `")`,
		`nats.CustomInboxPrefix("_INBOX_shop_orders")`,
		// Shown working at start, before anything is pasted.
		"Just now, with nats.go",
		"  PASS allowed publish delivered: ",
		"  PASS refused publish: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, sa := range []string{"shop/orders", "shop/storefront", "billing/payments", "billing/auditor"} {
		ns, name, _ := strings.Cut(sa, "/")
		if !strings.Contains(out, d.tokenFile(ns, name)) {
			t.Errorf("output lacks the token file of %s", sa)
		}
	}
	assertNoSecrets(t, d.dir, out)
	// The printed commands work: the allowed one is delivered.
	if !d.delivered(t, "shop", "orders", "billing", "payments", "billing.charges.create") {
		t.Error("billing.charges.create from shop/orders did not reach billing/payments")
	}
}

func TestDevPortFallback(t *testing.T) {
	first := startDev(t)
	port := first.url[strings.LastIndex(first.url, ":")+1:]
	second := startDev(t, "--port", port)
	if second.url == first.url {
		t.Fatalf("second instance claims the busy %s", first.url)
	}
	if want := "Port " + port + " is busy: nats-server listens on " + second.url + " instead."; !strings.Contains(second.stdout.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, second.stdout.String())
	}
}

func TestDevDefaultManifestMissing(t *testing.T) {
	// The tests run in internal/devmode, where the default manifest (relative to the repository
	// root) is not: the error says where to run from.
	err := runDev(context.Background(), []string{"--check", "--dir", t.TempDir()}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--manifest: "+settings.DefaultDevManifest+" not found: run from the repository root or pass --manifest FILE") {
		t.Errorf("dev with no manifest: %v", err)
	}
}
