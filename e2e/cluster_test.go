//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Scenario 8: a three-node NATS cluster with a sidecar next to each server. When one sidecar is
// stopped, its server's clients still get in: the callout request travels over the routes to
// a peer's sidecar in the same queue group.
func TestCluster(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	service, issuer := newUserKey(t), newAccountKey(t)
	// One Secret, mounted into each pod.
	files := map[string][]byte{keyService: seedFile(t, service), keyIssuer: seedFile(t, issuer)}
	names := []string{"nats-0", "nats-1", "nats-2"}
	routePorts := []int{freePort(t), freePort(t), freePort(t)}
	servers := make([]*natsServer, len(names))
	for i, name := range names {
		conf := natsConf{
			issuer:       pubOf(t, issuer),
			serviceUsers: []string{pubOf(t, service)},
			cluster:      &clusterConf{name: "e2e", port: routePorts[i], routes: routePorts},
		}
		servers[i] = startNATS(t, dir, name, conf)
	}
	for _, s := range servers {
		eventually(t, 30*time.Second, s.name+" routed to both peers", func() error {
			n, err := s.routes()
			if err == nil && n < len(servers)-1 {
				err = fmt.Errorf("%d routes", n)
			}
			return err
		})
	}
	sidecars := make([]*calloutService, len(names))
	for i, s := range servers {
		vol := newSecretVolume(t, fmt.Sprintf("%s/secret-%s", dir, s.name), files)
		sidecars[i] = startService(t, dir, "callout-"+s.name, s.url(), vol, serviceOpts{})
	}

	ns := newNamespace(t, "cluster")
	newServiceAccount(t, ns, "roamer", nil)
	tok := token(t, ns, "roamer")
	connectWhenKnown(t, servers[0].url(), tok).Close()

	allowed := func(s *calloutService) float64 { return s.requests(t, "result", "allowed") }
	// pinned connects to one server only: a refused client must not quietly succeed through
	// a peer the server advertised.
	pinned := func(t *testing.T, s *natsServer) {
		t.Helper()
		nc, err := dial(s.url(), nats.Token(tok), nats.IgnoreDiscoveredServers())
		if err != nil {
			t.Fatalf("connect to %s: %v", s.name, err)
		}
		defer nc.Close()
		if got := nc.ConnectedServerName(); got != s.name {
			t.Fatalf("connected to %s, want %s", got, s.name)
		}
		if err := nc.Publish("cluster.hello", nil); err != nil {
			t.Fatal(err)
		}
		if err := flushErr(nc); err != nil {
			t.Fatal(err)
		}
	}

	total := func() float64 {
		var n float64
		for _, s := range sidecars {
			n += allowed(s)
		}
		return n
	}

	t.Run("every server's clients get in", func(t *testing.T) {
		// nats-server 2.15 does not prefer the local sidecar for callout requests: it sends
		// each to a random member of the queue group, anywhere in the cluster (local members
		// are preferred only for messages that arrive over a route). So the counts are
		// checked over all sidecars, and the spread is logged.
		before := total()
		var spread []float64
		for _, s := range sidecars {
			spread = append(spread, allowed(s))
		}
		for _, s := range servers {
			for range 5 {
				pinned(t, s)
			}
		}
		if got := total(); got != before+15 {
			t.Errorf("the sidecars allowed %g of 15 connections", got-before)
		}
		for i, s := range sidecars {
			spread[i] = allowed(s) - spread[i]
		}
		t.Logf("15 connections, 5 to each server, answered by the sidecars of nats-0/1/2: %v", spread)
	})

	t.Run("a peer answers while a sidecar is down", func(t *testing.T) {
		sidecars[1].stop(t)
		before := allowed(sidecars[0]) + allowed(sidecars[2])
		for range 5 {
			pinned(t, servers[1])
		}
		if got := allowed(sidecars[0]) + allowed(sidecars[2]); got != before+5 {
			t.Errorf("the peers' sidecars allowed %g of nats-1's 5 connections", got-before)
		}
	})

	t.Run("the sidecar is back", func(t *testing.T) {
		sidecars[1].restart(t)
		before := allowed(sidecars[1])
		// It has rejoined the queue group once it answers again; with three members that takes
		// a few connections.
		eventually(t, 15*time.Second, "the restarted sidecar answers", func() error {
			pinned(t, servers[1])
			if allowed(sidecars[1]) == before {
				return errors.New("not yet")
			}
			return nil
		})
	})
}
