//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// testCA issues certificates for a TLS scenario and writes them as PEM files.
type testCA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{dir: dir, cert: cert, key: key, file: filepath.Join(dir, "ca.pem")}
	writeFile(t, ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

// issue writes name.pem and name-key.pem: a certificate for the DNS names (server) or for a
// client (no names).
func (ca *testCA) issue(t *testing.T, name string, dnsNames ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if len(dnsNames) > 0 {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: dnsNames, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

// nats-server with TLS on its client port and client certificates required, its certificate
// naming only the Service's DNS name (as in a cluster): the sidecar, dialing 127.0.0.1, connects
// with NATS_TLS_CA_FILE, NATS_TLS_SERVER_NAME and its client certificate, and workloads log in
// through it over TLS. Without NATS_TLS_SERVER_NAME the certificate does not match 127.0.0.1 and
// the sidecar says so instead of becoming ready.
func TestNATSTLS(t *testing.T) {
	t.Parallel()
	const serverName = "nats.nats.svc"
	certs := filepath.Join(testDir(t), "certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, certs)
	serverCert, serverKey := ca.issue(t, "nats-server", serverName)
	sidecarCert, sidecarKey := ca.issue(t, "nats-callout")
	workloadCert, workloadKey := ca.issue(t, "workload")

	d := newDeployment(t, deployOpts{
		tls: &tlsConf{certFile: serverCert, keyFile: serverKey, caFile: ca.file, verify: true},
		serviceEnv: []string{
			"NATS_TLS_CA_FILE=" + ca.file, "NATS_TLS_SERVER_NAME=" + serverName,
			"NATS_TLS_CERT_FILE=" + sidecarCert, "NATS_TLS_KEY_FILE=" + sidecarKey,
		},
	})
	url := d.nats.url()
	if !strings.Contains(d.svc.p.log(), `"tls":true`) {
		t.Error(`the sidecar's start-up line does not say "tls":true`)
	}

	ns := newNamespace(t, "tls")
	newServiceAccount(t, ns, "app", nil)
	tok := token(t, ns, "app")
	workloadTLS := []nats.Option{
		nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}),
		nats.RootCAs(ca.file), nats.ClientCert(workloadCert, workloadKey),
	}
	nc := connectWhenKnown(t, url, tok, workloadTLS...)
	if err := nc.Publish(ns+".hello", []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	if err := flushErr(nc); err != nil {
		t.Errorf("publish in the workload's namespace over TLS: %v", err)
	}
	if !nc.TLSRequired() {
		t.Error("the workload's connection is not TLS")
	}
	wantViolation(t, tryPublishOpts(url, tok, "other.x", workloadTLS...), "publish", "other.x")

	// The certificate names the Service, not 127.0.0.1.
	bad := &calloutService{name: "callout-no-server-name", dir: d.dir, httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	for _, e := range d.svc.env {
		if !strings.HasPrefix(e, "NATS_TLS_SERVER_NAME=") && !strings.HasPrefix(e, "HTTP_ADDR=") {
			bad.env = append(bad.env, e)
		}
	}
	bad.env = append(bad.env, "HTTP_ADDR="+bad.httpAddr)
	bad.p = startProc(t, bad.dir, bad.name, suite.serviceBin, nil, bad.env)
	t.Cleanup(func() { bad.p.stop(t) })
	eventually(t, 20*time.Second, "the certificate mismatch reported", func() error {
		log := bad.p.log()
		if !strings.Contains(log, "x509: cannot validate certificate for 127.0.0.1") || !strings.Contains(log, "set NATS_TLS_SERVER_NAME") {
			return fmt.Errorf("no certificate error with its hint in the log yet")
		}
		return nil
	})
	if code, body, err := bad.get("/readyz"); err != nil || code == 200 {
		t.Errorf("without NATS_TLS_SERVER_NAME /readyz = %d %v:\n%s", code, err, body)
	}
}

// tryPublishOpts connects with tok and the options, publishes once and returns the first error.
func tryPublishOpts(url, tok, subject string, opts ...nats.Option) error {
	nc, err := dial(url, append([]nats.Option{nats.Token(tok)}, opts...)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := nc.Publish(subject, nil); err != nil {
		return err
	}
	return flushErr(nc)
}
