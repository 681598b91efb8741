package installer

import (
	"fmt"
	"strings"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
)

// wantKind explains what key was expected and what was given instead, without echoing
// anything that could be a seed.
func wantKind(want, prefix, got string) string {
	switch {
	case got == "":
		return fmt.Sprintf("%s public key (%s...) is required", article(want), prefix)
	case strings.HasPrefix(got, "S"):
		return fmt.Sprintf("this looks like a seed (private key); give the %s public key (%s...) instead", want, prefix)
	case callout.KeyKind(got) != "unknown":
		return fmt.Sprintf("this is %s public key; %s public key (%s...) is required", article(callout.KeyKind(got)), article(want), prefix)
	default:
		return fmt.Sprintf("not a valid nkey; %s public key (%s...) is required", article(want), prefix)
	}
}

// article puts "a" or "an" before a key kind ("a user": its u sounds like "you").
func article(kind string) string {
	if strings.ContainsRune("aeio", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}

// shown quotes a value for an error message unless it may be a seed, which is never echoed.
func shown(v string) string {
	if strings.HasPrefix(strings.TrimSpace(v), "S") {
		return "(not shown: it may be a private key)"
	}
	return fmt.Sprintf("%q", v)
}
