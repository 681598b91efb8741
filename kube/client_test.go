package kube

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

func TestDiscoverIssuer(t *testing.T) {
	var calls, failFirst atomic.Int32
	var doc atomic.Value
	failFirst.Store(2)
	doc.Store(`{"issuer":"https://oidc.example.com/id/ABC","jwks_uri":"https://oidc.example.com/id/ABC/keys"}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) <= failFirst.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, doc.Load().(string))
	}))
	defer srv.Close()
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()

	// The API server answers after two failures: retried, then used.
	iss, err := DiscoverIssuer(ctx, &rest.Config{Host: srv.URL}, log, 30*time.Second)
	if err != nil || iss != "https://oidc.example.com/id/ABC" {
		t.Fatalf("DiscoverIssuer = %q, %v", iss, err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (two refused, one answered)", n)
	}

	// A document without a usable issuer, or no document at all, stops start-up with the reason.
	calls.Store(0)
	failFirst.Store(0)
	doc.Store(`{"issuer":""}`)
	if _, err := DiscoverIssuer(ctx, &rest.Config{Host: srv.URL}, log, time.Second); err == nil ||
		!strings.Contains(err.Error(), "no usable issuer") || !strings.Contains(err.Error(), "set JWT_ISSUER") {
		t.Errorf("empty issuer: %v", err)
	}
	if _, err := DiscoverIssuer(ctx, &rest.Config{Host: srv.URL + "/nowhere"}, log, time.Second); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("no document: %v", err)
	}
}

// TestKubeconfigList checks that KUBECONFIG may list several files, as kubectl takes it: the
// cluster of one and the context of another are merged.
func TestKubeconfigList(t *testing.T) {
	dir := t.TempDir()
	clusters := filepath.Join(dir, "clusters")
	contexts := filepath.Join(dir, "contexts")
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(clusters, "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n")
	write(contexts, "apiVersion: v1\nkind: Config\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\ncurrent-context: x\n")
	rc, err := RESTConfig(false, clusters+string(filepath.ListSeparator)+contexts)
	if err != nil {
		t.Fatalf("RESTConfig with a list: %v", err)
	}
	if rc.Host != "https://127.0.0.1:6443" || rc.BearerToken != "t" {
		t.Errorf("merged config: host %q, token %q", rc.Host, rc.BearerToken)
	}
	if _, err := RESTConfig(false, filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "KUBECONFIG") {
		t.Errorf("a missing kubeconfig: %v", err)
	}
}
