//go:build nodevserver

package devmode

import "errors"

// startNATS stands in for the embedded nats-server, which builds with -tags nodevserver leave
// out (the container image): dev mode is for a source checkout.
func startNATS(string, int, bool) (natsInstance, error) {
	return natsInstance{}, errors.New("dev mode is not in this build (built with -tags nodevserver): run it from a source checkout with go run . dev")
}
