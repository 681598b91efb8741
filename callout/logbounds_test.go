package callout

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 10, "abcdefghij…[truncated, 11 bytes]"},
		// "é" is 2 bytes: the cut moves back to the character's start.
		{"aéé", 2, "a…[truncated, 5 bytes]"},
	} {
		if got := kube.Clip(c.in, c.n); got != c.want || !utf8.ValidString(got) {
			t.Errorf("kube.Clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
	ws := clipWarnings(make([]string, 25))
	if len(ws) != maxLogWarnings+1 || ws[maxLogWarnings] != "… and 15 more" {
		t.Errorf("clipWarnings of 25: %q", ws)
	}
}

// Connection errors are repeatLog keys: however long and however many, the log keeps a
// bounded amount of them.
func TestRepeatLogIsBounded(t *testing.T) {
	var r repeatLog
	now := time.Now()
	for i := range 1000 {
		text := errString(errors.New(strings.Repeat("x", 10000) + string(rune('a'+i%26)) + strings.Repeat("y", i)))
		r.allow(text, now)
	}
	size := 0
	for k := range r.last {
		size += len(k)
	}
	if len(r.last) > 65 || size > 65*(maxLogText+64) {
		t.Errorf("repeatLog holds %d keys, %d bytes; want at most 65 keys of about %d bytes", len(r.last), size, maxLogText)
	}
}
