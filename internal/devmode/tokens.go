package devmode

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/atomicfile"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// startIssuer sets up the token issuer that stands in for the API server: it signs the tokens
// and serves its JWKS (and OIDC discovery) on loopback, where the verifier fetches it as it
// would in a cluster. run serves it.
func (in *instance) startIssuer(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("dev: JWKS listener: %w", err)
	}
	in.jwksLn = ln
	in.issuerURL = "http://" + ln.Addr().String()
	if in.issuer, err = kubefake.NewTokenIssuer(in.issuerURL); err != nil {
		return err
	}
	in.jwksSrv = &http.Server{Handler: issuerHandler(in.issuer), ReadHeaderTimeout: 5 * time.Second}
	return nil
}

// issuerHandler serves the token issuer's JWKS where the API server serves it, and an OIDC
// discovery document pointing at it.
func issuerHandler(t *kubefake.TokenIssuer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/openid/v1/jwks", t.JWKSHandler())
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q,"response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}`,
			t.Issuer(), t.Issuer()+"/openid/v1/jwks")
	})
	return mux
}

// tokenFiles mints a token for each ServiceAccount into dir/<namespace>/<name>.token, as the
// kubelet writes projected tokens, and re-mints them at 80% of their lifetime.
type tokenFiles struct {
	issuer   *kubefake.TokenIssuer
	dir      string
	audience string
	ttl      time.Duration
	log      *slog.Logger

	mu       sync.Mutex
	accounts []kube.ServiceAccount
}

// path is where the token of namespace/name is written.
func (t *tokenFiles) path(namespace, name string) string {
	return filepath.Join(t.dir, namespace, name+".token")
}

// set mints tokens for sas and remembers them for refreshes. The files of ServiceAccounts that
// are gone stay: their tokens are now refused, which is worth trying.
func (t *tokenFiles) set(sas []kube.ServiceAccount) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, sa := range sas {
		tok, err := t.issuer.ServiceAccountToken(sa.Namespace, sa.Name, string(sa.UID), []string{t.audience}, t.ttl)
		if err != nil {
			return fmt.Errorf("token for %s/%s: %w", sa.Namespace, sa.Name, err)
		}
		p := t.path(sa.Namespace, sa.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(p, []byte(tok), 0o600); err != nil {
			return err
		}
	}
	t.accounts = slices.Clone(sas)
	return nil
}

// current returns the ServiceAccounts tokens were last minted for.
func (t *tokenFiles) current() []kube.ServiceAccount {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.accounts)
}

// run re-mints the tokens until ctx is done; list, if set, re-reads the ServiceAccounts first.
func (t *tokenFiles) run(ctx context.Context, list func(context.Context) ([]kube.ServiceAccount, error)) error {
	tick := time.NewTicker(t.ttl * 8 / 10)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		sas := t.current()
		if list != nil {
			l, err := list(ctx)
			if err != nil {
				t.log.Error("tokens not refreshed", "error", err)
				continue
			}
			sas = l
		}
		if err := t.set(sas); err != nil {
			t.log.Error("tokens not refreshed", "error", err)
			continue
		}
		t.log.Info("tokens refreshed", "dir", t.dir, "serviceaccounts", len(sas))
	}
}
