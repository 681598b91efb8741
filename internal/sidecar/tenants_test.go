package sidecar

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestAccountFiles(t *testing.T) {
	pub := func() string {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		p, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b, stranger := pub(), pub(), pub()
	dir := t.TempDir()
	// A mounted Secret's layout: ..data and a timestamped directory are skipped, so are files
	// of another kind.
	for _, name := range []string{a + ".nk", b + ".nk", "..data", "README"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "..2026_12_05"), 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := accountFiles("NATS_TENANT_SIGNING_KEYS_DIR", dir, ".nk", []string{a, b})
	if err != nil || len(got) != 2 {
		t.Fatalf("got %v, %v; want both accounts", got, err)
	}
	if got, err := accountFiles("S", "", ".nk", nil); got != nil || err != nil {
		t.Errorf("no directory: %v, %v", got, err)
	}
	for name, want := range map[string]string{
		"not-a-key.nk":   "is not named <account public key>.nk",
		stranger + ".nk": "not in NATS_ALLOWED_ACCOUNTS",
	} {
		bad := t.TempDir()
		if err := os.WriteFile(filepath.Join(bad, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := accountFiles("NATS_TENANT_SIGNING_KEYS_DIR", bad, ".nk", []string{a}); err == nil ||
			!strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "NATS_TENANT_SIGNING_KEYS_DIR") {
			t.Errorf("%s: got %v, want an error naming the setting and %q", name, err, want)
		}
	}
	if _, err := accountFiles("NATS_TENANT_SIGNING_KEYS_DIR", filepath.Join(dir, "missing"), ".nk", nil); err == nil {
		t.Error("a missing directory was accepted")
	}
}
