package installer_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/installer"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
)

func TestParseSecretManifest(t *testing.T) {
	first, err := installer.GenerateInstall(installer.InstallOptions{Namespace: "nats"})
	if err != nil {
		t.Fatal(err)
	}
	data := decodeSecretData(t, first.Secret.Data)
	// What `kubectl get secret -o yaml` prints, and a hand-written stringData manifest.
	fromCluster := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: nats-callout\n  namespace: nats\n" +
		"  resourceVersion: \"42\"\n  uid: 0e7f5c3a-2d0e-4a57-9b0e-0123456789ab\n  creationTimestamp: \"2026-01-02T03:04:05Z\"\ntype: Opaque\ndata:\n"
	stringData := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: nats-callout\n  namespace: nats\nstringData:\n"
	for _, k := range []string{installer.SecretKeyIssuer, installer.SecretKeyService, installer.SecretKeySystem, installer.SecretKeyXKey} {
		fromCluster += "  " + k + ": " + base64.StdEncoding.EncodeToString([]byte(data[k])) + "\n"
		stringData += "  " + k + ": |\n    " + strings.TrimSpace(data[k]) + "\n"
	}
	for name, manifest := range map[string]string{"generated": string(first.Secret.Data), "kubectl get": fromCluster, "stringData": stringData} {
		t.Run(name, func(t *testing.T) {
			ns, secretName, seeds, err := installer.ParseSecretManifest([]byte(manifest))
			if err != nil {
				t.Fatal(err)
			}
			if ns != "nats" || secretName != "nats-callout" {
				t.Errorf("Secret %s/%s", ns, secretName)
			}
			if got := strings.TrimSpace(string(seeds.Service)); got != strings.TrimSpace(data[installer.SecretKeyService]) {
				t.Error("service seed differs")
			}
			again, err := installer.SecretManifest(ns, secretName, seeds)
			if err != nil || !bytes.Equal(again, first.Secret.Data) {
				t.Errorf("re-rendered Secret differs (%v):\n%s", err, again)
			}
		})
	}

	// A seed of the wrong kind under a key is refused, and never echoed.
	userKP, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Replace(stringData, strings.TrimSpace(data[installer.SecretKeyIssuer]), string(testsupport.Seed(t, userKP)), 1)
	_, _, _, err = installer.ParseSecretManifest([]byte(wrong))
	if err == nil || !strings.Contains(err.Error(), "issuer.nk") || strings.Contains(err.Error(), string(testsupport.Seed(t, userKP))) {
		t.Errorf("issuer.nk with a user seed: %v", err)
	}
	missing := strings.Replace(stringData, "  xkey.nk:", "  other:", 1)
	if _, _, _, err := installer.ParseSecretManifest([]byte(missing)); err == nil || !strings.Contains(err.Error(), "no xkey.nk") {
		t.Errorf("Secret without xkey.nk: %v", err)
	}
}
