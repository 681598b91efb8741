package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Defaults for VerifierConfig.
const (
	// DefaultLeeway absorbs clock skew between the API server and this service.
	DefaultLeeway = 30 * time.Second
	// DefaultRefreshInterval is how often the JWKS is re-fetched when all is well.
	DefaultRefreshInterval = time.Hour
	// DefaultUnknownKIDRefreshInterval is the least time between two JWKS refreshes caused by
	// tokens with an unknown kid, so that forged kids cannot hammer the API server.
	DefaultUnknownKIDRefreshInterval = time.Minute
)

const (
	// fetchTimeout bounds one JWKS request.
	fetchTimeout = 10 * time.Second
	// retryFirst and retryLast bound the backoff after a failed JWKS refresh.
	retryFirst = time.Second
	retryLast  = 30 * time.Second
	// maxTokenBytes rejects absurd tokens before any parsing; real ones are 1-2 KiB.
	maxTokenBytes = 16 << 10
	// usernamePrefix starts the sub of every ServiceAccount token.
	usernamePrefix = "system:serviceaccount:"
	// maxErrorDetail bounds the text of a parse error quoted in a refusal: it can carry parts
	// of the token (a number too large, say), and the token is the client's to choose.
	maxErrorDetail = 256
	// maxObjectName bounds the pod name and uid taken from a verified token, which reach the
	// decision log: Kubernetes names are at most 253 bytes.
	maxObjectName = 253
)

// validMethods are the signing algorithms accepted: asymmetric only, never none or HS*, so a
// public key can never be (ab)used as an HMAC secret.
var validMethods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

// Identity is the verified subject of a ServiceAccount token.
type Identity struct {
	Namespace string
	Name      string
	UID       string
	// Expiry is the token's exp. With the verifier's leeway it can lie up to Leeway in the past.
	Expiry time.Time
	// PodName and PodUID name the pod the token is bound to, when it is (projected tokens are).
	PodName string
	PodUID  string
	// NodeName and NodeUID name the node the token is bound to: a node-bound token, or the node
	// a pod-bound token's pod ran on (Kubernetes 1.30 and later add it).
	NodeName string
	NodeUID  string
	// SecretName and SecretUID name the Secret the token is bound to, when it is.
	SecretName string
	SecretUID  string
}

// Username returns the Kubernetes user name of the ServiceAccount,
// "system:serviceaccount:<namespace>:<name>".
func (i Identity) Username() string {
	return usernamePrefix + i.Namespace + ":" + i.Name
}

// ObjectRef names a Kubernetes object inside the kubernetes.io claim.
type ObjectRef struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

// KubernetesClaims is the private kubernetes.io claim of a ServiceAccount token.
type KubernetesClaims struct {
	Namespace      string     `json:"namespace,omitempty"`
	ServiceAccount *ObjectRef `json:"serviceaccount,omitempty"`
	Pod            *ObjectRef `json:"pod,omitempty"`
	Secret         *ObjectRef `json:"secret,omitempty"`
	Node           *ObjectRef `json:"node,omitempty"`
	// WarnAfter is set by the API server on extended-lifetime tokens.
	WarnAfter *jwt.NumericDate `json:"warnafter,omitempty"`
}

// ServiceAccountClaims is the claim set of a Kubernetes ServiceAccount token, as minted by the
// TokenRequest API.
type ServiceAccountClaims struct {
	jwt.RegisteredClaims
	Kubernetes *KubernetesClaims `json:"kubernetes.io,omitempty"`
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// JWKSURL is where the signing keys are published (required), e.g.
	// https://kubernetes.default.svc/openid/v1/jwks.
	JWKSURL string
	// HTTPClient fetches the JWKS. Give it the API server's CA and credentials when the JWKS is
	// served by the API server (rest.HTTPClientFor does). Nil means a plain client; each fetch is
	// bounded by a 10 s timeout either way.
	HTTPClient *http.Client
	// Issuer must equal the token's iss exactly (required).
	Issuer string
	// Audience must be one of the token's aud values (required).
	Audience string
	// Leeway tolerates clock skew on exp, nbf and iat. Zero means DefaultLeeway.
	Leeway time.Duration
	// RefreshInterval is how often the JWKS is re-fetched after a success. Zero means
	// DefaultRefreshInterval. After a failure it is retried sooner, with backoff from 1 s up to
	// 30 s (or RefreshInterval if shorter).
	RefreshInterval time.Duration
	// UnknownKIDRefreshInterval is the least time between refreshes triggered by a token whose
	// kid is not in the set. Zero means DefaultUnknownKIDRefreshInterval.
	UnknownKIDRefreshInterval time.Duration
	// Logger receives refresh failures. Nil discards.
	Logger *slog.Logger
	// TokenCacheSize bounds how many verified tokens are remembered (see tokenCache): a token
	// that verified is not verified again until its exp, or until the JWKS drops the key that
	// verified it. Zero means DefaultTokenCacheSize; negative turns the cache off.
	TokenCacheSize int
	// Registerer receives nats_callout_jwks_keys, nats_callout_jwks_refresh_errors_total,
	// nats_callout_token_cache_hits_total and nats_callout_token_cache_misses_total. Nil leaves
	// the metrics unregistered.
	Registerer prometheus.Registerer
}

// Verifier checks ServiceAccount tokens against the cluster's JWKS. It is safe for concurrent use.
type Verifier struct {
	keys            *keySet
	parser          *jwt.Parser
	issuer          string
	audience        string
	refreshInterval time.Duration
	done            chan struct{}
	// cache is nil when turned off.
	cache *tokenCache
	// now is the clock the cache reads.
	now func() time.Time
}

// NewVerifier validates the config and starts background JWKS refresh owned by ctx. It does not
// wait for the first fetch and does not fail when the JWKS is unreachable (a sidecar may start
// before the API server answers): it keeps retrying, and KeyCount reports 0 until keys arrive.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	u, err := url.Parse(cfg.JWKSURL)
	switch {
	case cfg.JWKSURL == "":
		return nil, errors.New("kube: JWKS URL is required")
	case err != nil:
		return nil, fmt.Errorf("kube: JWKS URL: %w", err)
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		return nil, fmt.Errorf("kube: JWKS URL %q: want an absolute http(s) URL", cfg.JWKSURL)
	case cfg.Issuer == "":
		return nil, errors.New("kube: token issuer is required")
	case cfg.Audience == "":
		return nil, errors.New("kube: token audience is required")
	case cfg.Leeway < 0:
		return nil, fmt.Errorf("kube: negative leeway %s", cfg.Leeway)
	case cfg.RefreshInterval < 0:
		return nil, fmt.Errorf("kube: negative JWKS refresh interval %s", cfg.RefreshInterval)
	case cfg.UnknownKIDRefreshInterval < 0:
		return nil, fmt.Errorf("kube: negative unknown-kid refresh interval %s", cfg.UnknownKIDRefreshInterval)
	}
	leeway := cmp.Or(cfg.Leeway, DefaultLeeway)
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	factory := promauto.With(cfg.Registerer)
	keys := &keySet{
		MemoryJWKSet: jwkset.NewMemoryStorage(),
		url:          cfg.JWKSURL,
		client:       client,
		limiter:      rate.NewLimiter(rate.Every(cmp.Or(cfg.UnknownKIDRefreshInterval, DefaultUnknownKIDRefreshInterval)), 1),
		log:          logger,
		keys: factory.NewGauge(prometheus.GaugeOpts{
			Name: "nats_callout_jwks_keys",
			Help: "Signing keys currently loaded from the JWKS.",
		}),
		errors: factory.NewCounter(prometheus.CounterOpts{
			Name: "nats_callout_jwks_refresh_errors_total",
			Help: "Failed JWKS fetches (background and unknown-kid refreshes).",
		}),
	}
	v := &Verifier{
		keys: keys,
		parser: jwt.NewParser(
			jwt.WithValidMethods(validMethods),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(leeway),
		),
		issuer:          cfg.Issuer,
		audience:        cfg.Audience,
		refreshInterval: cmp.Or(cfg.RefreshInterval, DefaultRefreshInterval),
		done:            make(chan struct{}),
		now:             time.Now,
	}
	if size := cmp.Or(cfg.TokenCacheSize, DefaultTokenCacheSize); size > 0 {
		v.cache = newTokenCache(size,
			factory.NewCounter(prometheus.CounterOpts{
				Name: "nats_callout_token_cache_hits_total",
				Help: "Logins whose token had verified before and was served from the verified-token cache.",
			}),
			factory.NewCounter(prometheus.CounterOpts{
				Name: "nats_callout_token_cache_misses_total",
				Help: "Logins whose token was not in the verified-token cache and was verified against the JWKS.",
			}))
		keys.replaced = v.cache.keysReplaced
	}
	go v.refreshLoop(ctx)
	return v, nil
}

// KeyCount is the number of signing keys loaded; 0 until the first successful fetch.
func (v *Verifier) KeyCount() int {
	return int(v.keys.count.Load())
}

// Done is closed when the background refresh has stopped, after its context ended.
func (v *Verifier) Done() <-chan struct{} {
	return v.done
}

// refreshLoop fetches the JWKS now, then every refreshInterval; after a failure it retries
// with jittered exponential backoff so that keys arrive soon after the endpoint does.
func (v *Verifier) refreshLoop(ctx context.Context) {
	defer close(v.done)
	maxWait := min(retryLast, v.refreshInterval)
	backoff := min(retryFirst, maxWait)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		wait := v.refreshInterval
		if err := v.keys.refresh(ctx, false); err != nil {
			// Full jitter in [backoff/2, backoff) spreads the retries of many sidecars.
			wait = backoff/2 + rand.N(backoff/2+1) //nolint:gosec // jitter needs no cryptographic randomness
			backoff = min(2*backoff, maxWait)
		} else {
			backoff = min(retryFirst, maxWait)
		}
		timer.Reset(wait)
	}
}

// Verify checks token and returns the ServiceAccount it was issued to. Errors wrap one of the
// package's sentinels (see errors.go) or ctx's error; they never contain the token.
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return Identity{}, ErrNoToken
	}
	if len(token) > maxTokenBytes {
		return Identity{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformedToken, len(token), maxTokenBytes)
	}
	if v.cache == nil {
		id, _, err := v.verify(ctx, token)
		return id, err
	}
	key := tokenHash(token)
	id, gen, ok := v.cache.get(key, v.now())
	if ok {
		return id, nil
	}
	id, kid, err := v.verify(ctx, token)
	if err == nil && kid != "" {
		// A token without a kid was checked against every key; which one verified it is not
		// known, so it is not cached (Kubernetes always sets a kid).
		v.cache.put(key, id, kid, gen, v.now())
	}
	return id, err
}

// verify checks token's signature and claims, and returns the kid of the key that verified it
// ("" when the token names none).
func (v *Verifier) verify(ctx context.Context, token string) (Identity, string, error) {
	var claims ServiceAccountClaims
	t, err := v.parser.ParseWithClaims(token, &claims, v.keys.keyfunc(ctx))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return Identity{}, "", fmt.Errorf("verify token: %w", ctxErr)
		}
		return Identity{}, "", v.classify(err, &claims)
	}
	id, err := identityFrom(&claims)
	if err != nil {
		return Identity{}, "", err
	}
	kid, _ := t.Header["kid"].(string)
	return id, kid, nil
}

// classify maps a jwt parse error onto one sentinel. Claim errors are joined by the jwt
// package (a token may be both expired and for another issuer), so the signed claims are
// inspected to pick the most fundamental one: not ours at all before merely stale. What the
// token says is quoted shortened (see quote): the token is the client's to make up.
func (v *Verifier) classify(err error, c *ServiceAccountClaims) error {
	detail := Clip(err.Error(), maxErrorDetail)
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("%w: %s", ErrMalformedToken, detail)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return fmt.Errorf("%w: %s", ErrBadSignature, detail)
	case !errors.Is(err, jwt.ErrTokenInvalidClaims):
		return fmt.Errorf("%w: %s", ErrMalformedToken, detail)
	}
	// From here on the signature is valid: the claims are the issuer's.
	switch {
	case c.Issuer != v.issuer:
		return fmt.Errorf("%w: %s", ErrWrongIssuer, quote(c.Issuer))
	case !slices.Contains(c.Audience, v.audience):
		return fmt.Errorf("%w: %s", ErrWrongAudience, quoteList(c.Audience))
	case c.ExpiresAt == nil:
		return fmt.Errorf("%w: no exp", ErrBadClaims)
	case errors.Is(err, jwt.ErrTokenExpired):
		return fmt.Errorf("%w: exp %s", ErrExpired, c.ExpiresAt.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return fmt.Errorf("%w: %s", ErrNotYetValid, detail)
	default:
		return fmt.Errorf("%w: %s", ErrBadClaims, detail)
	}
}

// identityFrom applies the Kubernetes claim rules to verified, current claims.
func identityFrom(c *ServiceAccountClaims) (Identity, error) {
	k := c.Kubernetes
	switch {
	case k == nil:
		return Identity{}, fmt.Errorf("%w: no kubernetes.io claim", ErrBadClaims)
	case k.ServiceAccount == nil:
		return Identity{}, fmt.Errorf("%w: no kubernetes.io serviceaccount", ErrBadClaims)
	case k.ServiceAccount.UID == "":
		return Identity{}, fmt.Errorf("%w: no serviceaccount uid", ErrBadClaims)
	}
	ns, name := k.Namespace, k.ServiceAccount.Name
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return Identity{}, fmt.Errorf("%w: namespace %s is not a DNS label", ErrBadClaims, quote(ns))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return Identity{}, fmt.Errorf("%w: serviceaccount name %s is not a DNS subdomain", ErrBadClaims, quote(name))
	}
	if want := usernamePrefix + ns + ":" + name; c.Subject != want {
		return Identity{}, fmt.Errorf("%w: sub %s does not match kubernetes.io (%q)", ErrBadClaims, quote(c.Subject), want)
	}
	id := Identity{
		Namespace: ns,
		Name:      name,
		UID:       Clip(k.ServiceAccount.UID, maxObjectName),
		Expiry:    c.ExpiresAt.Time,
	}
	if k.Pod != nil {
		id.PodName, id.PodUID = Clip(k.Pod.Name, maxObjectName), Clip(k.Pod.UID, maxObjectName)
	}
	if k.Node != nil {
		id.NodeName, id.NodeUID = Clip(k.Node.Name, maxObjectName), Clip(k.Node.UID, maxObjectName)
	}
	if k.Secret != nil {
		id.SecretName, id.SecretUID = Clip(k.Secret.Name, maxObjectName), Clip(k.Secret.UID, maxObjectName)
	}
	return id, nil
}
