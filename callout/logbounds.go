package callout

import (
	"strconv"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// Bounds on what a request, or whatever sent it, can put into one log line. A request is
// signed by the server key it names, which anyone able to publish on the callout subject can
// make up: its strings are attacker-chosen and of any length.
const (
	// maxLogValue bounds one value taken from a request: server name, client host, user nkey,
	// and each request value an error quotes.
	maxLogValue = 128
	// maxLogText bounds an error text, and a connection error used as a key.
	maxLogText = 1024
	// maxLogWarnings is how many of a decision's warnings are listed, each at most
	// maxLogWarning bytes; the rest are counted.
	maxLogWarnings = 10
	maxLogWarning  = 256
)

// clipValue is clip for one value taken from a request.
func clipValue(s string) string { return kube.Clip(s, maxLogValue) }

// clipWarnings bounds a decision's warnings for the log.
func clipWarnings(ws []string) []string {
	out := make([]string, 0, min(len(ws), maxLogWarnings+1))
	for i, w := range ws {
		if i == maxLogWarnings {
			out = append(out, "… and "+strconv.Itoa(len(ws)-i)+" more")
			break
		}
		out = append(out, kube.Clip(w, maxLogWarning))
	}
	return out
}
