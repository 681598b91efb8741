package callout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// Subject is where nats-server sends auth callout requests, in the callout account.
const Subject = "$SYS.REQ.USER.AUTH"

// xkeyHeader carries the server's curve public key on an encrypted request.
const xkeyHeader = "Nats-Server-Xkey"

// unknownIssuerLogPeriod is the least time between two logs of the same unknown issuer.
const unknownIssuerLogPeriod = time.Minute

// Errors that make a request untrustworthy; it is dropped without a response.
var (
	// ErrBadRequest means the request is not a well-formed, validly signed, unexpired
	// authorization request from a nats-server.
	ErrBadRequest = errors.New("invalid authorization request")
	// ErrEncryption means the request's encryption does not match the service's xkey setting,
	// or the sealed request could not be opened.
	ErrEncryption = errors.New("callout encryption mismatch")
	// ErrUnknownIssuer means the server expects responses signed by an account key the service
	// does not hold: a configuration error on one side or the other.
	ErrUnknownIssuer = errors.New("request names an issuer the service holds no key for")
)

// TokenVerifier checks a ServiceAccount token and returns who it belongs to.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (kube.Identity, error)
}

// PolicySource gives the permissions of a verified identity.
type PolicySource interface {
	Policy(id kube.Identity) (kube.Policy, error)
}

// HandlerConfig is what a Handler needs. Keys are read through functions so that a reloaded
// file takes effect on the next request.
type HandlerConfig struct {
	Verifier TokenVerifier
	Policies PolicySource
	// SigningKeys returns the current keys that sign responses (required). In server-config mode
	// they are the auth_callout.issuer account keys and sign the user JWTs too; in operator mode
	// they are the callout account's own key or one of its signing keys.
	SigningKeys func() *KeyRing
	// XKey returns the current curve key, or nil when callouts are not encrypted.
	XKey func() *XKey
	// Account is the target account users are placed in: its name, written as the user JWT
	// audience, in server-config mode; its public key (A...) in operator mode.
	Account string
	// Operator, if set, switches to operator (decentralized JWT) mode.
	Operator *OperatorConfig
	// MaxTTL caps the user JWT lifetime below the token's own expiry; 0 means no cap.
	MaxTTL time.Duration
	Logger *slog.Logger
	// Metrics may be nil in tests.
	Metrics *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler turns one callout request into one response.
type Handler struct {
	cfg HandlerConfig
	log *slog.Logger

	mu                sync.Mutex
	unknownIssuer     string
	unknownIssuerAt   time.Time
	unknownIssuerLogs map[string]time.Time
}

// NewHandler validates cfg.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	switch {
	case cfg.Verifier == nil:
		return nil, errors.New("callout: a token verifier is required")
	case cfg.Policies == nil:
		return nil, errors.New("callout: a policy source is required")
	case cfg.SigningKeys == nil:
		return nil, errors.New("callout: signing keys are required")
	case cfg.Account == "":
		return nil, errors.New("callout: a target account is required")
	case cfg.MaxTTL < 0:
		return nil, errors.New("callout: the maximum user JWT lifetime must not be negative")
	}
	if err := cfg.Operator.validate(cfg.Account); err != nil {
		return nil, err
	}
	if cfg.XKey == nil {
		cfg.XKey = func() *XKey { return nil }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{cfg: cfg, log: cfg.Logger, unknownIssuerLogs: map[string]time.Time{}}, nil
}

// Decision is what the handler decided about one request and why.
type Decision struct {
	Result string
	Reason string
	// Err explains a denial or drop for the log; it never contains a token or key material.
	Err      error
	Identity kube.Identity
	UserNkey string
	Server   string
	Client   string
	Warnings []string
	Duration time.Duration
}

// Handle decides one request. It returns the bytes to reply with, or nil when the request must
// not be answered (see ResultDropped). It logs the decision and records metrics.
func (h *Handler) Handle(ctx context.Context, data []byte, hdr nats.Header) ([]byte, Decision) {
	start := h.cfg.Now()
	if err := ctx.Err(); err != nil {
		// Queued past its deadline: the server has given up on it, so spend nothing on it.
		d := Decision{Result: ResultDropped, Reason: ReasonDeadline, Err: err}
		h.record(d)
		return nil, d
	}
	reply, d := h.decide(ctx, data, hdr)
	if reply != nil && ctx.Err() != nil {
		// The server has given up on this request by now; a late answer is useless.
		reply, d.Result, d.Reason, d.Err = nil, ResultDropped, ReasonDeadline, ctx.Err()
	}
	d.Duration = time.Since(start)
	h.record(d)
	return reply, d
}

func (h *Handler) decide(ctx context.Context, data []byte, hdr nats.Header) ([]byte, Decision) {
	var d Decision
	drop := func(reason string, err error) ([]byte, Decision) {
		d.Result, d.Reason, d.Err = ResultDropped, reason, err
		return nil, d
	}

	// Encrypted requests carry the server's curve key in a header and are sealed to ours.
	serverXKey := hdr.Get(xkeyHeader)
	xk := h.cfg.XKey()
	if serverXKey != "" {
		if xk == nil {
			return drop(ReasonEncryption, fmt.Errorf("%w: the server encrypts callouts (auth_callout.xkey) but no xkey is configured (NATS_XKEY_FILE)", ErrEncryption))
		}
		opened, err := xk.kp.Open(data, serverXKey)
		if err != nil {
			return drop(ReasonEncryption, fmt.Errorf("%w: cannot open the sealed request with xkey %s: %w", ErrEncryption, xk.pub, err))
		}
		data = opened
	}

	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return drop(ReasonBadRequest, fmt.Errorf("%w: %w", ErrBadRequest, err))
	}
	d.UserNkey = req.UserNkey
	d.Server = req.Server.Name
	d.Client = req.ClientInformation.Host
	if err := checkRequest(req, serverXKey, h.cfg.Now()); err != nil {
		return drop(ReasonBadRequest, err)
	}

	signer, issuerAccount, ok := h.responseSigner(req.Subject)
	if !ok {
		have := h.heldIssuers()
		h.noteUnknownIssuer(req.Subject, have)
		return drop(ReasonUnknownIssuer, fmt.Errorf("%w: server %q expects issuer %s, the service holds %s",
			ErrUnknownIssuer, req.Server.Name, req.Subject, strings.Join(have, ",")))
	}

	respond := func(userJWT string, denial error) ([]byte, error) {
		rc := jwt.NewAuthorizationResponseClaims(req.UserNkey)
		rc.Audience = req.Server.ID
		rc.IssuerAccount = issuerAccount
		if denial != nil {
			rc.Error = denial.Error()
		} else {
			rc.Jwt = userJWT
		}
		tok, err := rc.Encode(signer)
		if err != nil {
			return nil, err
		}
		if serverXKey == "" {
			return []byte(tok), nil
		}
		return xk.kp.Seal([]byte(tok), req.Server.XKey)
	}
	deny := func(reason string, err error) ([]byte, Decision) {
		d.Result, d.Reason, d.Err = ResultDenied, reason, err
		// The server logs this text; the client only sees "Authorization Violation".
		reply, rerr := respond("", fmt.Errorf("%s", reason))
		if rerr != nil {
			return drop(ReasonInternal, rerr)
		}
		return reply, d
	}

	token := req.ConnectOptions.Token
	if token == "" {
		// Clients that only speak user/password can send the token as the password.
		token = req.ConnectOptions.Password
	}
	id, err := h.cfg.Verifier.Verify(ctx, token)
	if err != nil {
		return deny(reasonOf(err), err)
	}
	d.Identity = id
	if !id.Expiry.After(h.cfg.Now()) {
		// Within the verifier's clock-skew leeway, but a user JWT must never outlive the token.
		return deny(ReasonExpired, fmt.Errorf("%w: token expires at %s", kube.ErrExpired, id.Expiry.UTC().Format(time.RFC3339)))
	}
	pol, err := h.cfg.Policies.Policy(id)
	if errors.Is(err, kube.ErrNotSynced) {
		// Let a peer whose cache is complete answer instead of refusing a valid client.
		return drop(ReasonNotReady, err)
	}
	if err != nil {
		return deny(reasonOf(err), err)
	}
	d.Warnings = pol.Warnings

	userSigner, userIssuerAccount := signer, ""
	if h.cfg.Operator != nil {
		// The user lands in the account whose key signs the user JWT.
		if userSigner, userIssuerAccount, ok = h.cfg.Operator.TargetKeys().signerFor(h.cfg.Account); !ok {
			return deny(ReasonInternal, errors.New("no target account signing key loaded"))
		}
	}
	userJWT, err := h.userJWT(req.UserNkey, id, pol.Permissions, userSigner, userIssuerAccount)
	if err != nil {
		return deny(ReasonInternal, err)
	}
	reply, err := respond(userJWT, nil)
	if err != nil {
		return drop(ReasonInternal, err)
	}
	d.Result, d.Reason = ResultAllowed, ReasonOK
	return reply, d
}

// checkRequest applies the checks jwt decoding leaves out: expiry, issuer and audience.
func checkRequest(req *jwt.AuthorizationRequestClaims, serverXKey string, now time.Time) error {
	vr := jwt.CreateValidationResults()
	req.Validate(vr)
	if errs := vr.Errors(); len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrBadRequest, errs[0])
	}
	if req.Expires > 0 && now.Unix() > req.Expires {
		return fmt.Errorf("%w: expired", ErrBadRequest)
	}
	if !nkeys.IsValidPublicServerKey(req.Issuer) || req.Issuer != req.Server.ID {
		return fmt.Errorf("%w: issuer %q is not the sending server %q", ErrBadRequest, req.Issuer, req.Server.ID)
	}
	if req.Audience != "nats-authorization-request" {
		return fmt.Errorf("%w: audience %q", ErrBadRequest, req.Audience)
	}
	if !nkeys.IsValidPublicAccountKey(req.Subject) {
		return fmt.Errorf("%w: subject %q is not an account key", ErrBadRequest, req.Subject)
	}
	if serverXKey != "" && req.Server.XKey != serverXKey {
		return fmt.Errorf("%w: the %s header does not match the signed server xkey", ErrEncryption, xkeyHeader)
	}
	return nil
}

// userJWT builds and signs the user's JWT. Permissions are always explicit: a user JWT without
// them would get the account's defaults, often everything.
func (h *Handler) userJWT(userNkey string, id kube.Identity, p kube.Permissions, signer nkeys.KeyPair, issuerAccount string) (string, error) {
	uc := jwt.NewUserClaims(userNkey)
	uc.Name = id.Username()
	uc.Audience = h.cfg.Account
	uc.IssuerAccount = issuerAccount
	uc.Tags.Add("namespace:"+id.Namespace, "serviceaccount:"+id.Name)
	exp := id.Expiry
	if h.cfg.MaxTTL > 0 {
		if capped := h.cfg.Now().Add(h.cfg.MaxTTL); capped.Before(exp) {
			exp = capped
		}
	}
	if exp.IsZero() {
		return "", errors.New("identity has no expiry")
	}
	uc.Expires = exp.Unix()
	uc.Pub.Allow.Add(p.PubAllow...)
	uc.Pub.Deny.Add(p.PubDeny...)
	uc.Sub.Allow.Add(p.SubAllow...)
	uc.Sub.Deny.Add(p.SubDeny...)
	// An empty allow list means "no restriction" to nats-server: close it instead.
	if len(uc.Pub.Allow) == 0 {
		uc.Pub.Deny = jwt.StringList{">"}
	}
	if len(uc.Sub.Allow) == 0 {
		uc.Sub.Deny = jwt.StringList{">"}
	}
	if p.AllowResponses {
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	}
	return uc.Encode(signer)
}

// responseSigner picks the key that signs the response to a request whose `sub` names
// account. Server-config mode: the key of that account (auth_callout.issuer). Operator mode:
// account is the callout account, which must be the account of the service's own user; it
// signs with its own key or, with issuer_account set, one of its signing keys.
func (h *Handler) responseSigner(account string) (nkeys.KeyPair, string, bool) {
	keys := h.cfg.SigningKeys()
	if h.cfg.Operator == nil {
		kp, ok := keys.Key(account)
		return kp, "", ok
	}
	if account != h.cfg.Operator.CalloutAccount() {
		return nil, "", false
	}
	return keys.signerFor(account)
}

// heldIssuers names what the service can answer for: the issuer keys in server-config mode,
// the callout account in operator mode.
func (h *Handler) heldIssuers() []string {
	if h.cfg.Operator == nil {
		return h.cfg.SigningKeys().PublicKeys()
	}
	return []string{h.cfg.Operator.CalloutAccount()}
}

// noteUnknownIssuer remembers the misconfiguration for readiness and logs it at most once a
// minute per expected issuer.
func (h *Handler) noteUnknownIssuer(want string, have []string) {
	now := h.cfg.Now()
	h.mu.Lock()
	h.unknownIssuer, h.unknownIssuerAt = want, now
	last, seen := h.unknownIssuerLogs[want]
	logIt := !seen || now.Sub(last) >= unknownIssuerLogPeriod
	if logIt {
		h.unknownIssuerLogs[want] = now
	}
	h.mu.Unlock()
	switch {
	case !logIt:
	case h.cfg.Operator != nil:
		h.log.Error("nats-server sends callout requests for an account the service's own user is not in; NATS_CREDS_FILE must be a user of the callout account",
			"expected_issuer", want, "held_issuers", have)
	default:
		h.log.Error("nats-server expects responses signed by an issuer account key the service does not hold; add its seed to NATS_SIGNING_KEY_FILE or fix auth_callout.issuer",
			"expected_issuer", want, "held_issuers", have)
	}
}

// UnknownIssuer reports the last issuer a server asked for that the service holds no key for,
// if that happened within the last window and the key is still missing.
func (h *Handler) UnknownIssuer(window time.Duration) (string, bool) {
	h.mu.Lock()
	want, at := h.unknownIssuer, h.unknownIssuerAt
	h.mu.Unlock()
	if want == "" || h.cfg.Now().Sub(at) > window {
		return "", false
	}
	if _, _, ok := h.responseSigner(want); ok {
		return "", false
	}
	return want, true
}

func (h *Handler) record(d Decision) {
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.observe(d)
	}
	attrs := []slog.Attr{
		slog.String("result", d.Result),
		slog.String("reason", d.Reason),
		slog.Float64("duration_ms", float64(d.Duration.Microseconds())/1000),
	}
	if d.Identity.Namespace != "" {
		attrs = append(attrs, slog.String("namespace", d.Identity.Namespace), slog.String("serviceaccount", d.Identity.Name))
	}
	if d.Identity.PodName != "" {
		// The pod a bound token was issued for: which replica connected.
		attrs = append(attrs, slog.String("pod", d.Identity.PodName))
	}
	if d.Server != "" {
		attrs = append(attrs, slog.String("server", d.Server))
	}
	if d.Client != "" {
		attrs = append(attrs, slog.String("client_host", d.Client))
	}
	if d.UserNkey != "" {
		attrs = append(attrs, slog.String("user_nkey", d.UserNkey))
	}
	if len(d.Warnings) > 0 {
		attrs = append(attrs, slog.Any("warnings", d.Warnings))
	}
	if d.Err != nil {
		attrs = append(attrs, slog.String("error", d.Err.Error()))
	}
	level := slog.LevelInfo
	if d.Result == ResultDropped {
		level = slog.LevelWarn
	}
	h.log.LogAttrs(context.Background(), level, "callout decision", attrs...)
}
