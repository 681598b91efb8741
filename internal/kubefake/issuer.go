package kubefake

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// TokenIssuer mints tokens with the same claim shape as the Kubernetes TokenRequest API and
// publishes its public key as a JWKS. It stands in for the API server in dev mode and tests;
// it is safe for concurrent use.
type TokenIssuer struct {
	issuer string
	key    crypto.Signer
	method jwt.SigningMethod
	kid    string
	jwks   []byte
}

// NewTokenIssuer generates an RSA-2048 signing key (RS256, like the API server's default) for
// tokens whose iss is issuerURL.
func NewTokenIssuer(issuerURL string) (*TokenIssuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("kube: generate RSA key: %w", err)
	}
	return newTokenIssuer(issuerURL, key)
}

// NewECDSATokenIssuer is NewTokenIssuer with an ECDSA P-256 key (ES256).
func NewECDSATokenIssuer(issuerURL string) (*TokenIssuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kube: generate ECDSA key: %w", err)
	}
	return newTokenIssuer(issuerURL, key)
}

func newTokenIssuer(issuerURL string, key crypto.Signer) (*TokenIssuer, error) {
	if issuerURL == "" {
		return nil, errors.New("kube: issuer URL is required")
	}
	var method jwt.SigningMethod
	var alg jwkset.ALG
	switch key.(type) {
	case *rsa.PrivateKey:
		method, alg = jwt.SigningMethodRS256, jwkset.AlgRS256
	case *ecdsa.PrivateKey:
		method, alg = jwt.SigningMethodES256, jwkset.AlgES256
	default:
		return nil, fmt.Errorf("kube: unsupported key type %T", key)
	}
	// The kid is derived from the public key the way the API server derives it.
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("kube: marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	kid := base64.RawURLEncoding.EncodeToString(sum[:])
	jwk, err := jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{ALG: alg, KID: kid, USE: jwkset.UseSig},
	})
	if err != nil {
		return nil, fmt.Errorf("kube: JWK: %w", err)
	}
	store := jwkset.NewMemoryStorage()
	if err := store.KeyWrite(context.Background(), jwk); err != nil {
		return nil, fmt.Errorf("kube: JWK set: %w", err)
	}
	jwks, err := store.JSONPublic(context.Background())
	if err != nil {
		return nil, fmt.Errorf("kube: JWK set: %w", err)
	}
	return &TokenIssuer{issuer: issuerURL, key: key, method: method, kid: kid, jwks: jwks}, nil
}

// Issuer returns the iss of the tokens this issuer mints.
func (t *TokenIssuer) Issuer() string { return t.issuer }

// KeyID returns the kid of the signing key.
func (t *TokenIssuer) KeyID() string { return t.kid }

// Key returns the private signing key, for tests that forge tokens Sign cannot make: no kid,
// another key's kid, an HMAC keyed with the public key.
func (t *TokenIssuer) Key() crypto.Signer { return t.key }

// JWKS returns the public key set as JSON, as /openid/v1/jwks serves it.
func (t *TokenIssuer) JWKS() []byte { return append([]byte(nil), t.jwks...) }

// JWKSHandler serves JWKS over HTTP.
func (t *TokenIssuer) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(t.jwks)
	})
}

// Claims returns the claims the API server puts in a ServiceAccount token that is not bound to
// a pod, valid from now for ttl. Tests change them and Sign the result to forge hostile tokens.
func (t *TokenIssuer) Claims(namespace, name, uid string, audience []string, ttl time.Duration) *kube.ServiceAccountClaims {
	now := time.Now()
	return &kube.ServiceAccountClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.issuer,
			Subject:   kube.Identity{Namespace: namespace, Name: name}.Username(),
			Audience:  jwt.ClaimStrings(audience),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        randomID(),
		},
		Kubernetes: &kube.KubernetesClaims{
			Namespace:      namespace,
			ServiceAccount: &kube.ObjectRef{Name: name, UID: uid},
		},
	}
}

// ServiceAccountToken mints a signed token for the ServiceAccount namespace/name with the given
// uid, audiences and lifetime.
func (t *TokenIssuer) ServiceAccountToken(namespace, name, uid string, audience []string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("kube: token lifetime %s must be positive", ttl)
	}
	if namespace == "" || name == "" || uid == "" {
		return "", errors.New("kube: namespace, name and uid are required")
	}
	return t.Sign(t.Claims(namespace, name, uid, audience, ttl))
}

// Sign signs arbitrary claims with the issuer's key and kid, without checking them. A
// pod-bound token is Claims with Kubernetes.Pod (and Node) set, signed.
func (t *TokenIssuer) Sign(claims jwt.Claims) (string, error) {
	tok := jwt.NewWithClaims(t.method, claims)
	tok.Header["kid"] = t.kid
	s, err := tok.SignedString(t.key)
	if err != nil {
		return "", fmt.Errorf("kube: sign token: %w", err)
	}
	return s, nil
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}
