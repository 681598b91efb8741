package kube

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// maxJWKSBytes bounds a JWKS response; a cluster publishes a handful of keys (a few KiB).
const maxJWKSBytes = 1 << 20

// errRefreshLimited is returned when an unknown kid arrives while its refresh budget is spent.
var errRefreshLimited = errors.New("JWKS refresh on unknown kid is rate limited")

// keySet holds the verification keys fetched from a JWKS URL. It is the jwkset.Storage that
// keyfunc reads: known kids are served from memory, an unknown kid triggers one refresh
// (rate limited, shared by concurrent callers) before it is declared unknown.
//
// jwkset's own HTTP storage is not used: its refresh goroutine is a fixed ticker, so a first
// fetch that fails (a sidecar starting before the API server answers) leaves it without keys
// for a whole refresh interval, and it offers no hook to retry sooner. keySet retries with
// backoff instead (see Verifier.refreshLoop) and otherwise keeps jwkset's semantics: a
// successful refresh replaces the whole set (so revoked keys go), a failed one keeps the old.
type keySet struct {
	*jwkset.MemoryJWKSet

	url     string
	client  *http.Client
	limiter *rate.Limiter
	log     *slog.Logger
	keys    prometheus.Gauge
	errors  prometheus.Counter
	count   atomic.Int64
	// replaced, if set, is told the kids (sorted) after each successful refresh.
	replaced func(kids []string)

	mu     sync.Mutex
	flight *refreshFlight // the refresh in progress, if any
	kids   []string       // of the loaded keys, sorted, to log changes
}

// refreshFlight is one fetch whose result every concurrent caller shares.
type refreshFlight struct {
	done chan struct{}
	err  error
}

// KeyRead returns the key with the given kid, refreshing the set once (within the rate limit)
// when the kid is unknown: that is how a rotated-in signing key is picked up at once. The kid
// is the client's to choose: errors quote it shortened, and nothing remembers it.
func (k *keySet) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	jwk, err := k.MemoryJWKSet.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return jwk, err
	}
	if rerr := k.refresh(ctx, true); rerr != nil {
		return jwkset.JWK{}, fmt.Errorf("unknown key id %s (%d keys loaded): %w", quote(kid), k.count.Load(), rerr)
	}
	jwk, err = k.MemoryJWKSet.KeyRead(ctx, kid)
	if err != nil {
		return jwkset.JWK{}, fmt.Errorf("unknown key id %s (%d keys loaded, JWKS just refreshed): %w", quote(kid), k.count.Load(), jwkset.ErrKeyNotFound)
	}
	return jwk, nil
}

// keyfunc returns the jwt.Keyfunc that picks the keys a token's signature is checked with.
// A token naming a kid is checked with that key only (refreshing the set once for an unknown
// kid); one without a kid with every loaded key. Either way a key is used only for its own
// algorithm (see keyAlgorithm): the token's alg header never chooses how a key is read.
//
// A token with a crit header is refused before any key is looked up: RFC 7515 makes a JWS
// whose critical extensions are not understood invalid, and some change what the signature
// covers (RFC 7797's unencoded payload). Kubernetes never sets it.
func (k *keySet) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if crit, ok := t.Header["crit"]; ok {
			return nil, fmt.Errorf("the header lists critical extensions (crit %s), which are not supported", quote(fmt.Sprint(crit)))
		}
		alg := t.Method.Alg()
		kidValue, hasKID := t.Header["kid"]
		if !hasKID {
			jwks, err := k.KeyReadAll(ctx)
			if err != nil {
				return nil, err
			}
			var set jwt.VerificationKeySet
			for _, jwk := range jwks {
				if keyAlgorithm(jwk) == alg {
					set.Keys = append(set.Keys, publicKey(jwk))
				}
			}
			if len(set.Keys) == 0 {
				return nil, fmt.Errorf("no kid, and none of the %d keys loaded is for algorithm %s", len(jwks), alg)
			}
			return set, nil
		}
		kid, ok := kidValue.(string)
		if !ok {
			return nil, errors.New("the kid header is not a string")
		}
		jwk, err := k.KeyRead(ctx, kid)
		if err != nil {
			return nil, err
		}
		if want := keyAlgorithm(jwk); want != alg {
			return nil, fmt.Errorf("key %s is for algorithm %s, the token says %s", quote(kid), cmp.Or(want, "(none)"), alg)
		}
		return publicKey(jwk), nil
	}
}

// keyAlgorithm is the one algorithm a key verifies: its published alg, else the one its type
// implies, as Kubernetes signs: RS256 for RSA keys, ES256, ES384 or ES512 by the curve of EC
// keys. "" for a key no accepted algorithm fits.
func keyAlgorithm(jwk jwkset.JWK) string {
	m := jwk.Marshal()
	if m.ALG != "" {
		return string(m.ALG)
	}
	switch key := publicKey(jwk).(type) {
	case *rsa.PublicKey:
		return "RS256"
	case *ecdsa.PublicKey:
		switch key.Curve.Params().Name {
		case "P-256":
			return "ES256"
		case "P-384":
			return "ES384"
		case "P-521":
			return "ES512"
		}
	}
	return ""
}

// publicKey returns the public half of a JWK's key.
func publicKey(jwk jwkset.JWK) any {
	key := jwk.Key()
	if pk, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		return pk.Public()
	}
	return key
}

// refresh fetches the JWKS, or waits for the fetch already in progress. With limited set, a
// new fetch is only started when the unknown-kid rate limiter allows it.
func (k *keySet) refresh(ctx context.Context, limited bool) error {
	k.mu.Lock()
	f := k.flight
	if f == nil {
		if limited && !k.limiter.Allow() {
			k.mu.Unlock()
			return errRefreshLimited
		}
		f = &refreshFlight{done: make(chan struct{})}
		k.flight = f
		k.mu.Unlock()

		f.err = k.fetch(ctx)
		if f.err != nil {
			k.errors.Inc()
			k.log.WarnContext(ctx, "JWKS refresh failed", "url", k.url, "keys", k.count.Load(), "error", f.err)
		}
		k.mu.Lock()
		k.flight = nil
		k.mu.Unlock()
		close(f.done)
		return f.err
	}
	k.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetch downloads and parses the JWKS and replaces the key set. Keys that cannot verify an
// accepted token (symmetric, encryption-only, unsupported curves) are skipped; a response
// with no usable key at all is an error and keeps the previous keys, because a cluster always
// publishes at least one and an empty answer means something is broken.
func (k *keySet) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return fmt.Errorf("build JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxJWKSBytes))
		return fmt.Errorf("fetch JWKS: unexpected HTTP status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("read JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return fmt.Errorf("read JWKS: response larger than %d bytes", maxJWKSBytes)
	}
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("decode JWKS: %w", err)
	}
	keys := make([]jwkset.JWK, 0, len(set.Keys))
	var skipped []error
	for i, m := range set.Keys {
		if m.KTY != jwkset.KtyRSA && m.KTY != jwkset.KtyEC {
			continue // symmetric or Ed25519: no accepted algorithm uses it
		}
		if m.USE != "" && m.USE != jwkset.UseSig {
			continue
		}
		// Private: false keeps only public material even if a broken endpoint publishes more.
		jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %d (kid %s): %w", i, quote(m.KID), err))
			continue
		}
		keys = append(keys, jwk)
	}
	if len(keys) == 0 {
		return fmt.Errorf("JWKS has no usable signing key (%d published): %w", len(set.Keys), errors.Join(skipped...))
	}
	if len(skipped) > 0 {
		k.log.WarnContext(ctx, "JWKS keys skipped", "url", k.url, "error", errors.Join(skipped...))
	}
	kids := make([]string, len(keys))
	for i, jwk := range keys {
		kids[i] = jwk.Marshal().KID
	}
	slices.Sort(kids)
	if err := k.KeyReplaceAll(ctx, keys); err != nil {
		return fmt.Errorf("store JWKS: %w", err)
	}
	k.count.Store(int64(len(keys)))
	k.keys.Set(float64(len(keys)))
	if k.replaced != nil {
		k.replaced(kids)
	}
	k.mu.Lock()
	changed := !slices.Equal(kids, k.kids)
	k.kids = kids
	k.mu.Unlock()
	if changed {
		k.log.InfoContext(ctx, "JWKS loaded", "url", k.url, "keys", len(kids), "kids", kids)
	}
	return nil
}
