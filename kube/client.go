package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig returns the Kubernetes client config: the pod's in-cluster config, or the one of
// kubeconfig. kubeconfig may be a list of files as kubectl takes it in KUBECONFIG (merged in
// order); "" means the default loading rules (KUBECONFIG, then ~/.kube/config).
func RESTConfig(inCluster bool, kubeconfig string) (*rest.Config, error) {
	if inCluster {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("K8S_IN_CLUSTER=true but no in-cluster config (set K8S_IN_CLUSTER=false and KUBECONFIG outside a pod): %w", err)
		}
		return rc, nil
	}
	rc, err := KubeconfigLoader(kubeconfig).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("KUBECONFIG: %w", err)
	}
	return rc, nil
}

// KubeconfigLoader loads kubeconfig: one file, a list of files separated as in PATH, or ""
// for the default loading rules.
func KubeconfigLoader(kubeconfig string) clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	switch files := filepath.SplitList(kubeconfig); {
	case len(files) == 1:
		rules.ExplicitPath = files[0]
	case len(files) > 1:
		rules.Precedence = files
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
}

// JWKSClient picks the JWKS URL and the HTTP client to fetch it with. Unless jwksURLSet, a
// kubeconfig's API server serves the JWKS. A JWKS served by the API server is fetched with the
// Kubernetes client's CA and credentials, so it works in a pod and with a kubeconfig alike.
func JWKSClient(rc *rest.Config, jwksURL string, jwksURLSet, inCluster bool) (string, *http.Client, error) {
	if !jwksURLSet && !inCluster {
		jwksURL = strings.TrimSuffix(rc.Host, "/") + "/openid/v1/jwks"
	}
	u, err := url.Parse(jwksURL)
	if err != nil {
		return "", nil, fmt.Errorf("JWKS_URL: %w", err)
	}
	apiHost, _ := url.Parse(rc.Host)
	servedByAPI := u.Hostname() == "kubernetes.default.svc" || u.Hostname() == "kubernetes.default.svc.cluster.local" ||
		(apiHost != nil && u.Host == apiHost.Host)
	if !servedByAPI {
		return jwksURL, &http.Client{Timeout: 10 * time.Second}, nil
	}
	client, err := apiHTTPClient(rc)
	if err != nil {
		return "", nil, fmt.Errorf("JWKS_URL: %w", err)
	}
	return jwksURL, client, nil
}

// apiHTTPClient is a plain HTTP client with the Kubernetes client's CA and credentials, for
// the API server's non-resource URLs (JWKS, OIDC discovery).
func apiHTTPClient(rc *rest.Config) (*http.Client, error) {
	rt, err := rest.TransportFor(rc)
	if err != nil {
		return nil, fmt.Errorf("HTTP client from the Kubernetes config: %w", err)
	}
	return &http.Client{Transport: rt, Timeout: 10 * time.Second}, nil
}

// DiscoverIssuer reads the ServiceAccount token issuer from the API server's OIDC discovery
// document (/.well-known/openid-configuration; the ClusterRole
// system:service-account-issuer-discovery allows it), so that one setting works on every
// cluster. The API server may not answer yet when the pod starts: failures are retried with
// backoff for up to patience, then the last error is returned.
func DiscoverIssuer(ctx context.Context, rc *rest.Config, log *slog.Logger, patience time.Duration) (string, error) {
	client, err := apiHTTPClient(rc)
	if err != nil {
		return "", err
	}
	u := strings.TrimSuffix(rc.Host, "/") + "/.well-known/openid-configuration"
	deadline := time.Now().Add(patience)
	wait := 500 * time.Millisecond
	for {
		iss, err := fetchIssuer(ctx, client, u)
		if err == nil {
			log.Info("JWT issuer discovered", "issuer", iss, "from", u)
			return iss, nil
		}
		if time.Now().Add(wait).After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("%w (set JWT_ISSUER to the issuer URL instead)", err)
		}
		log.Warn("JWT issuer discovery failed; retrying", "url", u, "error", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 8*time.Second)
	}
}

// fetchIssuer reads the issuer of the OIDC discovery document at u.
func fetchIssuer(ctx context.Context, client *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return "", fmt.Errorf("GET %s: not an OIDC discovery document: %w", u, err)
	}
	if parsed, err := url.Parse(doc.Issuer); err != nil || doc.Issuer == "" || parsed.Scheme == "" || parsed.Host == "" {
		return "", fmt.Errorf("GET %s: no usable issuer in it (%q)", u, doc.Issuer)
	}
	return doc.Issuer, nil
}
