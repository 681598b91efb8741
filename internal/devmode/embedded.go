//go:build !nodevserver

package devmode

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startNATS writes dir/nats.conf and the keys it names, and starts an embedded nats-server
// from it on 127.0.0.1:port, or on a free port when port is busy.
func startNATS(dir string, port int, xkey bool) (natsInstance, error) {
	n, err := prepareNATS(dir, port, xkey)
	if err != nil {
		return n, err
	}
	opts, err := server.ProcessConfigFile(n.conf)
	if err != nil {
		return n, fmt.Errorf("dev: server config %s: %w", n.conf, err)
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		return n, fmt.Errorf("dev: nats-server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return n, fmt.Errorf("dev: nats-server did not start listening on 127.0.0.1:%d", n.port)
	}
	n.url = s.ClientURL()
	n.stop = func() {
		s.Shutdown()
		s.WaitForShutdown()
	}
	return n, nil
}
