//go:build e2e

package e2e

import "testing"

// TestShutdownCalloutRace checks that only nats-server's own shutdown panic with a callout in
// flight is told apart from other exits.
func TestShutdownCalloutRace(t *testing.T) {
	const race = `[28629] [INF] Initiating Shutdown...
panic: runtime error: invalid memory address or nil pointer dereference
goroutine 228 [running]:
github.com/nats-io/nats-server/v2/server.(*Server).newRespInbox(0x1621521f0008?)
github.com/nats-io/nats-server/v2/server.(*Server).processClientOrLeafCallout(0x1621521f0008)
`
	for _, tt := range []struct {
		log  string
		want bool
	}{
		{race, true},
		{"[1] [INF] Server is ready\n" + race[len("[28629] [INF] Initiating Shutdown...\n"):], false}, // not during shutdown
		{"[1] [INF] Initiating Shutdown...\npanic: something else\n", false},
		{"[1] [INF] Initiating Shutdown...\n[1] [INF] Server Exiting..\n", false},
	} {
		if got := shutdownCalloutRace(tt.log); got != tt.want {
			t.Errorf("shutdownCalloutRace(%q) = %v, want %v", tt.log, got, tt.want)
		}
	}
}
