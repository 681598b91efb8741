package settings

import (
	"io"
	"strings"
	"testing"
)

func TestParseDev(t *testing.T) {
	c, err := ParseDev(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 4222 || c.HTTPAddr != "127.0.0.1:8080" || !c.XKey || c.Manifest != DefaultDevManifest || c.Log.Format != "text" {
		t.Errorf("defaults: %+v", c)
	}
	c, err = ParseDev([]string{"--check"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 0 || c.HTTPAddr != "127.0.0.1:0" {
		t.Errorf("--check must pick free ports unless told otherwise: port %d, http %s", c.Port, c.HTTPAddr)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--manifest", "m.yaml", "--kubeconfig", "k"}, "--manifest and --kubeconfig"},
		{[]string{"--namespaces", "a"}, "--namespaces needs --kubeconfig"},
		{[]string{"--port", "70000"}, "--port"},
		{[]string{"--token-ttl", "1m"}, "--token-ttl"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--http-addr", "8080"}, "--http-addr"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		if _, err := ParseDev(tt.args, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseDev(%q) error = %v, want one naming %s", tt.args, err, tt.want)
		}
	}
}
