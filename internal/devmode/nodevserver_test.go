//go:build nodevserver

package devmode

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
)

func TestNoDevServer(t *testing.T) {
	c, err := settings.ParseDev([]string{"--check", "--dir", t.TempDir()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), c, io.Discard, io.Discard, "test", "test")
	if err == nil || !strings.Contains(err.Error(), "dev mode is not in this build (built with -tags nodevserver)") {
		t.Errorf("Run = %v, want the error saying dev mode is not in this build", err)
	}
}
