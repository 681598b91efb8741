//go:build !nodevserver

package devmode

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
)

func TestDevHotReload(t *testing.T) {
	mdir := t.TempDir()
	const base = `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: a
  namespace: team
%s---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: b
  namespace: other
`
	manifest := writeManifest(t, mdir, strings.Replace(base, "%s", "", 1))
	d := startDev(t, "--manifest", manifest)

	// Before: team/a may not publish into the other namespace.
	nc, errs, err := d.connect(t, "team", "a")
	if err != nil {
		t.Fatalf("connect as team/a: %v", err)
	}
	if err := nc.Publish("other.news", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("publish to other.news: got %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish to other.news was not refused")
	}
	nc.Close()

	// Annotate team/a: the next connection may publish there.
	writeManifest(t, mdir, strings.Replace(base, "%s", "  annotations:\n    nats.io/allowed-pub-subjects: other.news\n", 1))
	testsupport.WaitFor(t, "the new permission on a new connection", 10*time.Second, func() bool {
		return d.delivered(t, "team", "a", "other", "b", "other.news")
	})

	// Remove other/b and team/a's grant: other/b's token is refused from then on, and the
	// connection team/a holds is closed (live revocation), because it no longer holds.
	held, _, err := d.connect(t, "team", "a")
	if err != nil {
		t.Fatal(err)
	}
	writeManifest(t, mdir, "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n  namespace: team\n")
	testsupport.WaitFor(t, "team/a's connection closed by live revocation", 10*time.Second, held.IsClosed)
	testsupport.WaitFor(t, "other/b to be refused", 10*time.Second, func() bool {
		_, _, err := d.connect(t, "other", "b")
		return errors.Is(err, nats.ErrAuthorization)
	})

	// A manifest that does not parse keeps the last good one.
	writeManifest(t, mdir, "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  nmae: typo\n") //nolint:misspell // the typo is the test
	testsupport.WaitFor(t, "team/a still accepted", 10*time.Second, func() bool {
		_, _, err := d.connect(t, "team", "a")
		return err == nil
	})
}
