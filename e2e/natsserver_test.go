//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// natsConf is a nats-server configuration in server-config mode, written exactly the way the
// README shows it, plus what a scenario adds (a static account, cluster routes).
type natsConf struct {
	// name is server_name. It is in the file rather than -n on the command line: nats-server
	// keeps -a -p -m across a reload but not -n, and then refuses the reload
	// ("config reload not supported for ServerName").
	name         string
	issuer       string   // auth_callout.issuer: the issuer account public key (A...)
	serviceUsers []string // the service's user nkeys (U...): AUTH's users
	// authUsers is auth_users; nil means serviceUsers. A service nkey rotation lists the next
	// nkey here ahead of time, since auth_users cannot be reloaded.
	authUsers []string
	xkey      string // auth_callout.xkey (X...), optional
	// systemUser, if set, is a user nkey (U...) of the system account, for live revocation;
	// it bypasses the callout like the service users.
	systemUser string
	// accounts are more (tenant) accounts next to AUTH, APP and SYS.
	accounts []string
	static   *staticUser
	cluster  *clusterConf
	tls      *tlsConf
}

// tlsConf is the client port's tls block.
type tlsConf struct {
	certFile, keyFile, caFile string
	verify                    bool // clients must present a certificate signed by caFile
}

// staticUser is an account with its own static credentials that bypasses the callout, like the
// user NACK manages JetStream with.
type staticUser struct {
	account, user, password string
}

type clusterConf struct {
	name   string
	port   int
	routes []int
}

func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func (c natsConf) render() string {
	var b strings.Builder
	if c.name != "" {
		fmt.Fprintf(&b, "server_name: %q\n", c.name)
	}
	users := make([]string, len(c.serviceUsers))
	for i, u := range c.serviceUsers {
		users[i] = fmt.Sprintf("{ nkey: %q }", u)
	}
	authUsers := append([]string(nil), c.serviceUsers...)
	if c.authUsers != nil {
		authUsers = append([]string(nil), c.authUsers...)
	}
	b.WriteString("accounts {\n")
	fmt.Fprintf(&b, "  AUTH: { users: [ %s ] }\n", strings.Join(users, ", "))
	b.WriteString("  APP: {}\n")
	for _, a := range c.accounts {
		fmt.Fprintf(&b, "  %s: {}\n", a)
	}
	if c.static != nil {
		fmt.Fprintf(&b, "  %s: { users: [ { user: %q, password: %q } ] }\n", c.static.account, c.static.user, c.static.password)
		authUsers = append(authUsers, c.static.user)
	}
	if c.systemUser != "" {
		fmt.Fprintf(&b, "  SYS: { users: [ { nkey: %q } ] }\n}\n", c.systemUser)
		authUsers = append(authUsers, c.systemUser)
	} else {
		b.WriteString("  SYS: {}\n}\n")
	}
	b.WriteString("system_account: SYS\n")
	b.WriteString("authorization {\n  auth_callout {\n")
	fmt.Fprintf(&b, "    issuer: %q\n", c.issuer)
	fmt.Fprintf(&b, "    auth_users: [ %s ]\n", quoteList(authUsers))
	b.WriteString("    account: AUTH\n")
	if c.xkey != "" {
		fmt.Fprintf(&b, "    xkey: %q\n", c.xkey)
	}
	b.WriteString("  }\n}\n")
	if c.tls != nil {
		fmt.Fprintf(&b, "tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: %v\n}\n",
			c.tls.certFile, c.tls.keyFile, c.tls.caFile, c.tls.verify)
	}
	if c.cluster != nil {
		routes := make([]string, len(c.cluster.routes))
		for i, p := range c.cluster.routes {
			routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
		}
		fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [ %s ]\n}\n",
			c.cluster.name, c.cluster.port, strings.Join(routes, ", "))
	}
	return b.String()
}

// natsServer is one nats-server binary. The client address and monitor port come from the
// command line (-a -p -m, as scripts/nats-up.sh does), so the file holds only what users write
// (and server_name).
type natsServer struct {
	name     string
	dir      string
	confPath string
	port     int
	httpPort int
	p        *proc
}

func startNATS(t *testing.T, dir, name string, conf natsConf) *natsServer {
	t.Helper()
	s := &natsServer{name: name, dir: dir, confPath: filepath.Join(dir, name+".conf"), port: freePort(t), httpPort: freePort(t)}
	s.setConfig(t, conf)
	s.start(t)
	return s
}

func (s *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

func (s *natsServer) args() []string {
	return []string{"-c", s.confPath, "-a", "127.0.0.1", "-p", fmt.Sprint(s.port), "-m", fmt.Sprint(s.httpPort)}
}

// setConfig writes the configuration file (with server_name set to the server's name) and
// checks it with `nats-server -t`.
func (s *natsServer) setConfig(t *testing.T, conf natsConf) {
	t.Helper()
	conf.name = s.name
	writeFile(t, s.confPath, []byte(conf.render()))
	if out, err := exec.Command(suite.natsServer, append(s.args(), "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nats-server rejects %s: %v\n%s\n%s", s.confPath, err, out, conf.render())
	}
}

func (s *natsServer) start(t *testing.T) {
	t.Helper()
	s.p = startProc(t, s.dir, s.name, suite.natsServer, s.args(), []string{"PATH=/usr/bin:/bin"})
	eventually(t, 20*time.Second, "nats-server "+s.name+" healthy", func() error {
		if !s.p.running() {
			t.Fatalf("nats-server %s exited:\n%s", s.name, s.p.tail(20))
		}
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", s.httpPort))
	})
}

// stop stops the server gracefully (SIGTERM) and checks that it exited.
func (s *natsServer) stop(t *testing.T) {
	t.Helper()
	code := s.p.stop(t)
	switch {
	case code == 0 || code == -1:
	case shutdownCalloutRace(s.p.log()):
		// nats-server 2.15.2 can dereference its torn-down system account when a client's
		// callout starts while it shuts down (server.(*Server).newRespInbox from
		// processClientOrLeafCallout, after "Initiating Shutdown"). It is nats-server's own
		// exit, after it stopped serving; the tests' clients see a restart either way.
		t.Logf("nats-server %s exited with %d: nats-server's shutdown race with a callout in flight (newRespInbox)", s.name, code)
	default:
		t.Errorf("nats-server %s exited with %d", s.name, code)
	}
}

// shutdownCalloutRace reports whether a nats-server log ends in the panic nats-server 2.15.2
// hits when a callout starts during its shutdown.
func shutdownCalloutRace(log string) bool {
	i := strings.LastIndex(log, "Initiating Shutdown")
	if i < 0 {
		return false
	}
	tail := log[i:]
	return strings.Contains(tail, "panic: runtime error: invalid memory address or nil pointer dereference") &&
		strings.Contains(tail, "(*Server).newRespInbox") && strings.Contains(tail, "processClientOrLeafCallout")
}

// restart stops the server and starts it again on the same ports with the current config file,
// as a container restart would.
func (s *natsServer) restart(t *testing.T) {
	t.Helper()
	s.stop(t)
	s.start(t)
}

// reload asks the running server to re-read its configuration (SIGHUP, what
// `nats-server --signal reload=PID` sends) and waits until it has.
func (s *natsServer) reload(t *testing.T) {
	t.Helper()
	const done, failed = "Reloaded server configuration", "Failed to reload"
	before, failures := strings.Count(s.p.log(), done), strings.Count(s.p.log(), failed)
	if err := s.p.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "nats-server "+s.name+" reloaded", func() error {
		log := s.p.log()
		if strings.Count(log, failed) > failures {
			t.Fatalf("nats-server %s refused the reload:\n%s", s.name, s.p.tail(5))
		}
		if strings.Count(log, done) <= before {
			return errors.New("no reload logged yet")
		}
		return nil
	})
}

// connInfo is the part of /connz?auth=1 the tests read.
type connInfo struct {
	Cid            uint64 `json:"cid"`
	Name           string `json:"name"`
	Account        string `json:"account"`
	AuthorizedUser string `json:"authorized_user"`
}

func (s *natsServer) connz() ([]connInfo, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/connz?auth=1&limit=4096", s.httpPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Connections []connInfo `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	return body.Connections, nil
}

// routes returns the number of routes the server has.
func (s *natsServer) routes() (int, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/routez", s.httpPort))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		NumRoutes int `json:"num_routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, err
	}
	return body.NumRoutes, nil
}

var httpClient = &http.Client{Timeout: 3 * time.Second}

func httpOK(url string) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
