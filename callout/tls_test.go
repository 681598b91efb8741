package callout

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed certificate and its key as PEM files in dir.
func writeSelfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	for f, b := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

func TestTLSFilesCheck(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir, "a")
	otherCert, _ := writeSelfSigned(t, dir, "b")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files TLSFiles
		want  string // "" = valid; else a substring of the error
	}{
		{"server name only", TLSFiles{ServerName: "nats.nats.svc"}, ""},
		{"ca", TLSFiles{CAFile: cert}, ""},
		{"client certificate", TLSFiles{CAFile: cert, CertFile: cert, KeyFile: key}, ""},
		{"missing ca", TLSFiles{CAFile: filepath.Join(dir, "nope.pem")}, "NATS_TLS_CA_FILE"},
		{"ca not pem", TLSFiles{CAFile: notPEM}, "NATS_TLS_CA_FILE"},
		{"certificate without key", TLSFiles{CertFile: cert}, "go together"},
		{"key without certificate", TLSFiles{KeyFile: key}, "go together"},
		{"key of another certificate", TLSFiles{CertFile: otherCert, KeyFile: key}, "NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.files.Check()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Check = %v, want an error containing %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), "PRIVATE KEY"):
				t.Fatalf("error shows key material: %v", err)
			}
		})
	}
}

func TestTLSHint(t *testing.T) {
	for text, want := range map[string]string{
		"nats: tls error: tls: failed to verify certificate: x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs": "NATS_TLS_SERVER_NAME",
		"tls: failed to verify certificate: x509: certificate is valid for nats.nats.svc, not localhost":                                             "NATS_TLS_SERVER_NAME",
		"tls: failed to verify certificate: x509: certificate signed by unknown authority":                                                           "NATS_TLS_CA_FILE",
		"nats: secure connection required":        "requires TLS",
		"remote error: tls: certificate required": "NATS_TLS_CERT_FILE",
		"nats: authorization violation":           "",
	} {
		if got := tlsHint(text); (want == "" && got != "") || !strings.Contains(got, want) {
			t.Errorf("tlsHint(%q) = %q, want one mentioning %q", text, got, want)
		}
	}
}
