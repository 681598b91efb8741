//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// SIGTERM while workloads connect: the instance stops taking requests, answers the ones it has,
// and exits 0. With a second instance on the same server (a rolling update, or a peer in a
// cluster), no connection attempt fails: one dropped in flight would wait out the server's
// authorization timeout and fail.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, deployOpts{})
	url := d.nats.url()
	second := startService(t, d.dir, "callout-2", url, d.vol, serviceOpts{})
	ns := newNamespace(t, "shutdown")
	newServiceAccount(t, ns, "steady", nil)
	tok := token(t, ns, "steady")
	connectWhenKnown(t, url, tok).Close()

	load := startLoad(t, url, tok, "shutdown.load", 3)
	// Both instances take requests (the server spreads them over the queue group).
	eventually(t, 30*time.Second, "both instances answering", func() error {
		for _, s := range []*calloutService{d.svc, second} {
			if s.requests(t, "result", "allowed") < 5 {
				return fmt.Errorf("%s has answered %g", s.name, s.requests(t, "result", "allowed"))
			}
		}
		return nil
	})

	start := time.Now()
	d.svc.stop(t) // requires exit code 0
	t.Logf("SIGTERM to exit: %s", time.Since(start).Round(time.Millisecond))
	if log := d.svc.p.log(); !strings.Contains(log, `"msg":"stopped"`) {
		t.Errorf("the stopped instance did not log its shutdown:\n%s", d.svc.p.tail(10))
	}
	load.waitSuccesses(t, 30)
	load.finish(t)

	// The sole remaining instance is stopped while clients still connect: it exits 0 too.
	load = startLoad(t, url, tok, "shutdown.load", 3)
	load.waitSuccesses(t, 10)
	second.stop(t)
	load.halt()
}
