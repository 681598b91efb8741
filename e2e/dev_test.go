//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `dev --kubeconfig` serves a real cluster's ServiceAccounts: the example manifest applied to the
// API server (in namespaces of its own), read back through the same metadata-only informer as
// production, with the dev self-test run against them. Tokens are minted locally with the
// ServiceAccounts' real uids.
func TestDevKubeconfig(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	example, err := os.ReadFile(filepath.Join("..", "examples", "serviceaccounts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The example's namespaces (and the subjects named after them), moved out of the way of
	// other tests.
	manifest := strings.NewReplacer("shop", "devkc-shop", "billing", "devkc-billing").Replace(string(example))
	newNamespace(t, "devkc-shop")
	newNamespace(t, "devkc-billing")
	path := filepath.Join(dir, "serviceaccounts.yaml")
	writeFile(t, path, []byte(manifest))
	kubectl(t, "apply", "-f", path)
	t.Cleanup(func() { kubectl(t, "delete", "--ignore-not-found", "-f", path) })

	p := startProc(t, dir, "dev", suite.serviceBin,
		[]string{"dev", "--kubeconfig", suite.kubeconfig, "--namespaces", "devkc-shop,devkc-billing", "--check"},
		[]string{"PATH=/usr/bin:/bin", "HOME=" + dir})
	code, exited := p.wait(2 * time.Minute)
	out := p.log()
	if !exited || code != 0 {
		t.Fatalf("dev --kubeconfig --check: exited=%v code=%d\n%s", exited, code, out)
	}
	for _, want := range []string{
		"PASS allowed publish delivered: devkc-shop/orders published devkc-billing.charges.create, devkc-billing/payments received it",
		"PASS refused publish: ",
		"PASS refused token: garbage",
		"PASS refused token: unknown serviceaccount",
		"PASS request/reply via private inbox",
		"PASS shared _INBOX refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAIL ") {
		t.Errorf("a step failed:\n%s", out)
	}
	checkLogHoldsNoSecrets(t, p)
}
