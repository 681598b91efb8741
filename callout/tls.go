package callout

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// TLSFiles are the files of the service's TLS connection to nats-server.
type TLSFiles struct {
	// CAFile verifies the server's certificate; empty means the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate, for a server that verifies clients.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry. The sidecar dials
	// 127.0.0.1, which a certificate rarely names; empty means the URL's host.
	ServerName string
}

// Check loads every file once, so that a wrong path or a bad PEM stops start-up with the
// setting named instead of failing every connection attempt.
func (t *TLSFiles) Check() error {
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return fmt.Errorf("NATS_TLS_CA_FILE: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("NATS_TLS_CA_FILE: %s holds no PEM certificate", t.CAFile)
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return errors.New("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together: a client certificate needs its key")
	case t.CertFile != "":
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			// The error names files and PEM structure, never key material.
			return fmt.Errorf("NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE: %w", err)
		}
	}
	return nil
}

// RedactURL returns a NATS URL (or comma-separated list) fit for logs: a password becomes
// "xxxxx", and a bare user part, which nats.go sends as a token, is dropped entirely.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil {
			// url.Parse errors quote their input; say only that it did not parse.
			parts[i] = "(unparseable URL)"
			continue
		}
		if u.User != nil {
			if _, hasPass := u.User.Password(); hasPass {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			} else {
				u.User = url.User("xxxxx")
			}
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
