package sidecar

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/revoke"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// check is one readiness condition.
type check struct {
	name string
	fn   func() error
}

// readiness is what /readyz reports.
type readiness struct {
	checks   []check
	handler  *callout.Handler
	operator *operatorCheck
	revoker  *revoke.Revoker
	// accounts, if set, warns about namespace labels the service cannot serve.
	accounts func() error
}

func newReadiness(store *kube.Store, pods *kube.PodCache, verifier *kube.Verifier, jwksURL string, svc *callout.Service, f *files,
	h *callout.Handler, op *operatorCheck) readiness {
	checks := []check{
		{"informer", func() error {
			if !store.HasSynced() {
				return errors.New("ServiceAccount informer has not synced")
			}
			return nil
		}},
	}
	if pods != nil {
		checks = append(checks, check{"pods", func() error {
			if !pods.HasSynced() {
				return errors.New("pod informer has not synced (VERIFY_BOUND_OBJECTS)")
			}
			return nil
		}})
	}
	return readiness{handler: h, operator: op, checks: append(checks, []check{
		{"jwks", func() error {
			if verifier.KeyCount() == 0 {
				return fmt.Errorf("no JWKS keys loaded from %s", jwksURL)
			}
			return nil
		}},
		{"nats", svc.Ready},
		{"signing_key", func() error {
			if len(f.signingKeys().PublicKeys()) == 0 {
				return errors.New("no signing key loaded")
			}
			return nil
		}},
	}...)}
}

// withRevoker adds live revocation's warning, when it is on (rv not nil).
func (r readiness) withRevoker(rv *revoke.Revoker) readiness {
	r.revoker = rv
	return r
}

// withAccounts adds, with tenant accounts (ns not nil), the Namespace cache's check and the
// warning about namespace labels the service cannot serve.
func (r readiness) withAccounts(ns *kube.NamespaceCache, accounts *kube.Accounts, h *callout.Handler) readiness {
	if ns == nil {
		return r
	}
	r.checks = append(r.checks, check{"namespaces", func() error {
		if !ns.HasSynced() {
			return errors.New("the Namespace informer has not synced")
		}
		return nil
	}})
	r.accounts = func() error { return accountWarnings(ns, accounts, h) }
	return r
}

// ServeHTTP writes one line per readiness condition and answers 503 if any fails.
func (r readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	ok := true
	for _, c := range r.checks {
		if err := c.fn(); err != nil {
			ok = false
			fmt.Fprintf(&b, "[-] %s: %v\n", c.name, err)
		} else {
			fmt.Fprintf(&b, "[+] %s ok\n", c.name)
		}
	}
	// A server expecting an issuer the service lacks is reported but does not fail readiness:
	// an unready sidecar would take its whole NATS pod out of service.
	if want, bad := r.handler.UnknownIssuer(10 * time.Minute); bad {
		fmt.Fprintf(&b, "[!] issuer: a nats-server expects issuer %s, which NATS_SIGNING_KEY_FILE does not hold\n", want)
	}
	if err := r.operator.Err(); err != nil {
		fmt.Fprintf(&b, "[!] operator_setup: %v\n", err)
	}
	if r.accounts != nil {
		if err := r.accounts(); err != nil {
			fmt.Fprintf(&b, "[!] accounts: %v\n", err)
		}
	}
	if r.revoker != nil {
		// Logins work without it; only live revocation waits for it.
		if err := r.revoker.Err(); err != nil {
			fmt.Fprintf(&b, "[!] revocation: %v\n", err)
		}
	}
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = io.WriteString(w, b.String())
}

// newMux serves /healthz (alive), /readyz and /metrics from reg.
func newMux(ready http.Handler, reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("/readyz", ready)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}
