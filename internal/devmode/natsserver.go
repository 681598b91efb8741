package devmode

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/atomicfile"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/installer"
)

// natsInstance is the embedded nats-server: the keys it trusts, its config file and where it
// listens. startNATS (embedded.go; left out with -tags nodevserver) starts it.
type natsInstance struct {
	keys keyFiles
	// conf is dir/nats.conf, the config the server runs from.
	conf string
	// port is the port on 127.0.0.1 it listens on; busy says the asked-for port was taken.
	port int
	busy bool
	// url is its client URL; stop shuts it down and waits until it has.
	url  string
	stop func()
}

// keyFiles are the files holding the keys dev mode generates; their seeds are never printed.
type keyFiles struct {
	serviceFile, issuerFile, xkeyFile, systemFile string
	config                                        installer.ServerConfig
}

// prepareNATS generates the keys and writes dir/nats.conf (the callout config a user would
// write) for a server on 127.0.0.1:port, or on a free port when port is busy.
func prepareNATS(dir string, port int, xkey bool) (natsInstance, error) {
	n := natsInstance{conf: filepath.Join(dir, "nats.conf")}
	var err error
	if n.keys, err = newKeys(dir, xkey); err != nil {
		return n, err
	}
	if n.port, n.busy, err = pickPort(port); err != nil {
		return n, err
	}
	block, err := n.keys.config.NATSConfig()
	if err != nil {
		return n, fmt.Errorf("dev: server config: %w", err)
	}
	conf := fmt.Sprintf("# nats-server config of `nats-k8s-oidc-callout dev`: every client login goes to the callout.\nlisten: \"127.0.0.1:%d\"\n%s", n.port, block)
	if err := atomicfile.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
		return n, fmt.Errorf("dev: %w", err)
	}
	return n, nil
}

// newKeys generates the service user, the issuer account, a system account user (live
// revocation) and (if xkey) the curve key, and
// writes their seeds to dir with mode 0600, where the service reads them as it reads mounted
// Secrets.
func newKeys(dir string, xkey bool) (keyFiles, error) {
	var k keyFiles
	type gen struct {
		create func() (nkeys.KeyPair, error)
		file   *string
		public *string
		name   string
	}
	// Live revocation's user: in the system account, past the callout.
	k.config.BypassUsers = []installer.BypassUser{{Account: installer.DefaultSystemAccount}}
	gens := []gen{
		{nkeys.CreateUser, &k.serviceFile, &k.config.ServiceUser, "service.nk"},
		{nkeys.CreateAccount, &k.issuerFile, &k.config.Issuer, "issuer.nk"},
		{nkeys.CreateUser, &k.systemFile, &k.config.BypassUsers[0].Nkey, "system.nk"},
	}
	if xkey {
		gens = append(gens, gen{nkeys.CreateCurveKeys, &k.xkeyFile, &k.config.XKey, "xkey.nk"})
	}
	for _, g := range gens {
		kp, err := g.create()
		if err != nil {
			return k, fmt.Errorf("dev: generate %s: %w", g.name, err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return k, fmt.Errorf("dev: %s: %w", g.name, err)
		}
		if *g.public, err = kp.PublicKey(); err != nil {
			return k, fmt.Errorf("dev: %s: %w", g.name, err)
		}
		*g.file = filepath.Join(dir, g.name)
		if err := atomicfile.WriteFile(*g.file, append(seed, '\n'), 0o600); err != nil {
			return k, fmt.Errorf("dev: %w", err)
		}
	}
	return k, nil
}

// pickPort returns port if 127.0.0.1:port is free, else (or when port is 0) a free port.
func pickPort(port int) (int, bool, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	busy := err != nil
	if busy {
		if ln, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0"); err != nil {
			return 0, false, fmt.Errorf("dev: no free port on 127.0.0.1: %w", err)
		}
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, busy && port != 0, nil
}

// listenFallback listens on addr, or on a free port of the same host when addr is busy.
func listenFallback(addr string) (net.Listener, bool, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err == nil {
		return ln, false, nil
	}
	host, _, _ := net.SplitHostPort(addr)
	ln, err2 := lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, "0"))
	if err2 != nil {
		return nil, false, fmt.Errorf("%w (and no free port on %s: %w)", err, host, err2)
	}
	return ln, true, nil
}
