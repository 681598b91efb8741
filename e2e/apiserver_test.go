//go:build e2e

package e2e

import (
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// tcpProxy forwards a loopback port to the API server. down cuts the link (every open
// connection closed, new ones refused), as a network partition or an API server restart does;
// up restores it on the same port.
type tcpProxy struct {
	target, addr string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.down()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(c)
			}()
		}
	}()
}

func (p *tcpProxy) pipe(c net.Conn) {
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, s) {
		c.Close()
		s.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(s, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, s); done <- struct{}{} }()
	<-done
	c.Close()
	s.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

// track registers both ends, unless the proxy went down meanwhile.
func (p *tcpProxy) track(c, s net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	return true
}

func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

func (p *tcpProxy) up(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy up again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// The API server goes away for a while: the sidecar keeps deciding from its informer cache
// and its cached JWKS, stays ready, refuses what it cannot know yet, and once the API server
// is reachable again catches up with what changed meanwhile (list and watch resumed).
func TestAPIServerOutage(t *testing.T) {
	t.Parallel()
	api, err := url.Parse(suite.apiURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startTCPProxy(t, api.Host)
	dir := testDir(t)
	kc, err := os.ReadFile(suite.serviceKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(kc), "server: "+suite.apiURL) {
		t.Fatalf("the service's kubeconfig does not name %s", suite.apiURL)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig-via-proxy")
	writeFile(t, kubeconfig, []byte(strings.Replace(string(kc), "server: "+suite.apiURL, "server: https://"+proxy.addr, 1)))
	d := newDeployment(t, deployOpts{serviceEnv: []string{"KUBECONFIG=" + kubeconfig}})
	url := d.nats.url()

	ns := newNamespace(t, "outage")
	newServiceAccount(t, ns, "steady", map[string]string{"nats.io/allowed-pub-subjects": "steady.before"})
	tok := token(t, ns, "steady")
	connectWhenKnown(t, url, tok).Close()
	if err := tryPublish(t, url, tok, "steady.before", "x"); err != nil {
		t.Fatalf("before the outage: %v", err)
	}

	proxy.down()
	// Changes the sidecar cannot see while cut off.
	kubectl(t, "-n", ns, "annotate", "serviceaccount", "steady", "--overwrite", "nats.io/allowed-pub-subjects=steady.after")
	newServiceAccount(t, ns, "late", nil)
	late := token(t, ns, "late")

	// The sidecar notices it is cut off (its list/watch calls fail) and says so ...
	eventually(t, 30*time.Second, "the outage reported", func() error {
		if n := d.svc.metrics(t).sum("nats_callout_informer_watch_errors_total"); n == 0 {
			return errors.New("nats_callout_informer_watch_errors_total is 0")
		}
		if !strings.Contains(d.svc.p.log(), "serviceaccount list/watch failed; deciding from the cache") {
			return errors.New("no warning in the log")
		}
		if strings.Contains(d.svc.p.log(), "list/watch works again") {
			return errors.New("recovery reported while the link is down")
		}
		return nil
	})
	// ... while known identities keep logging in with what the cache holds.
	for range 5 {
		if err := tryPublish(t, url, tok, "steady.before", "x"); err != nil {
			t.Errorf("during the outage, a known ServiceAccount: %v", err)
		}
	}
	if nc, err := dial(url, nats.Token(late)); err == nil {
		nc.Close()
		t.Error("during the outage, a ServiceAccount the cache cannot know yet was let in")
	}
	if code, body, err := d.svc.get("/readyz"); err != nil || code != 200 {
		t.Errorf("during the outage /readyz = %d %v:\n%s", code, err, body)
	}

	proxy.up(t)
	eventually(t, 90*time.Second, "the ServiceAccount created during the outage let in", func() error {
		nc, err := dial(url, nats.Token(late))
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
	eventually(t, 30*time.Second, "the recovery reported", func() error {
		if !strings.Contains(d.svc.p.log(), "serviceaccount list/watch works again") {
			return errors.New("no recovery line in the log")
		}
		return nil
	})
	if strings.Contains(d.svc.p.log(), "DEBUG+") {
		t.Error("client-go's verbose klog lines reach the service's log")
	}
	eventually(t, 30*time.Second, "the annotation changed during the outage applied", func() error {
		if err := tryPublish(t, url, tok, "steady.after", "x"); err != nil {
			return err
		}
		if err := tryPublish(t, url, tok, "steady.before", "x"); err == nil {
			return errors.New("steady.before still allowed")
		}
		return nil
	})
}

// JWT_ISSUER=auto: the sidecar reads the issuer from the API server's OIDC discovery (with its
// own RBAC) and enforces it: the cluster's tokens are accepted, a token of the cluster's key
// naming another issuer is refused.
func TestIssuerDiscovery(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, deployOpts{serviceEnv: []string{"JWT_ISSUER=auto"}})
	ns := newNamespace(t, "discovery")
	sa := newServiceAccount(t, ns, "app", nil)
	connectWhenKnown(t, d.nats.url(), token(t, ns, "app")).Close()
	log := d.svc.p.log()
	if !strings.Contains(log, `"msg":"JWT issuer discovered","issuer":"`+suite.issuer+`"`) {
		t.Errorf("no discovery of %s in the log:\n%s", suite.issuer, d.svc.p.tail(20))
	}
	wrong := realisticClaims(sa, time.Hour)
	wrong.Issuer = "https://kubernetes.default.svc.example"
	wantRefused(t, d, "wrong_issuer", nats.Token(forge(t, wrong, nil)))
}
