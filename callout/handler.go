package callout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// Subject is where nats-server sends auth callout requests, in the callout account.
const Subject = "$SYS.REQ.USER.AUTH"

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
	// ErrPanic means handling the request hit a bug in the service or a library it uses: the
	// request was dropped (ReasonInternal) and the service carries on.
	ErrPanic = errors.New("panic while handling the request")
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
	// Bound, if set, checks the objects tokens are bound to (VERIFY_BOUND_OBJECTS).
	Bound BoundObjectChecker
	// Sources, if set, gives the addresses a user may connect from (BIND_SOURCE_IP): a client
	// connecting from elsewhere, or a token it gives none for, is refused, and the user JWT
	// carries them as its allowed sources.
	Sources SourcePinner
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
	// Account is the account the user is placed in (or, for a denial after the account was
	// chosen, would have been), and AccountWhy why; empty before the choice.
	Account    string
	AccountWhy string
	UserNkey   string
	Server     string
	Client     string
	Warnings   []string
	Duration   time.Duration
}

// Handle decides one request. It returns the bytes to reply with, or nil when the request must
// not be answered (see ResultDropped). It logs the decision and records metrics. A panic while
// deciding is recovered: the request is dropped (ReasonInternal, an error wrapping ErrPanic).
func (h *Handler) Handle(ctx context.Context, data []byte, hdr nats.Header) ([]byte, Decision) {
	start := time.Now()
	var d Decision
	if err := ctx.Err(); err != nil {
		// Queued past its deadline: the server has given up on it, so spend nothing on it.
		d.Result, d.Reason, d.Err = ResultDropped, ReasonDeadline, err
		h.record(d)
		return nil, d
	}
	reply := h.decideSafely(ctx, data, hdr, &d)
	if reply != nil && ctx.Err() != nil {
		// The server has given up on this request by now; a late answer is useless.
		reply, d.Result, d.Reason, d.Err = nil, ResultDropped, ReasonDeadline, ctx.Err()
	}
	d.Duration = time.Since(start)
	h.record(d)
	return reply, d
}

// panicError is a recovered panic with the stack it happened on.
type panicError struct {
	value string
	stack []byte
}

func (p *panicError) Error() string { return "panic: " + p.value }

func (p *panicError) Unwrap() error { return ErrPanic }

// decideSafely is decide with a panic turned into a dropped request: a request that trips a bug
// costs that request, never the sidecar (and with it every login its server sends).
func (h *Handler) decideSafely(ctx context.Context, data []byte, hdr nats.Header, d *Decision) (reply []byte) {
	defer func() {
		if v := recover(); v != nil {
			// What d learned before the panic (user nkey, server, identity) stays for the log.
			reply = nil
			d.Result, d.Reason = ResultDropped, ReasonInternal
			d.Err = &panicError{value: kube.Clip(fmt.Sprint(v), maxLogText), stack: debug.Stack()}
		}
	}()
	return h.decide(ctx, data, hdr, d)
}

func (h *Handler) decide(ctx context.Context, data []byte, hdr nats.Header, d *Decision) []byte {
	req, reason, err := h.openRequest(data, hdr, d)
	if err != nil {
		d.Result, d.Reason, d.Err = ResultDropped, reason, err
		return nil
	}
	userJWT, reason, err := h.grant(ctx, req, d)
	switch {
	case reason == ReasonNotReady, reason == ReasonDeadline:
		// not_ready: let a peer whose cache is complete answer instead of refusing a valid
		// client. deadline_exceeded: the server has given up waiting; signing is wasted work.
		d.Result, d.Reason, d.Err = ResultDropped, reason, err
		return nil
	case err != nil:
		d.Result, d.Reason, d.Err = ResultDenied, reason, err
		// The server logs this text; the client only sees "Authorization Violation".
		userJWT, err = "", fmt.Errorf("%s", reason)
	default:
		d.Result, d.Reason = ResultAllowed, ReasonOK
	}
	reply, rerr := req.respond(userJWT, err)
	if rerr != nil {
		d.Result, d.Reason, d.Err = ResultDropped, ReasonInternal, rerr
		return nil
	}
	return reply
}

// grant verifies the client's token, looks its ServiceAccount up and builds the user JWT. An
// error comes with the reason the client is refused (ReasonNotReady, ReasonDeadline: no
// answer).
func (h *Handler) grant(ctx context.Context, r *request, d *Decision) (string, string, error) {
	req := r.claims
	token := req.ConnectOptions.Token
	if token == "" {
		// Clients that only speak user/password can send the token as the password.
		token = req.ConnectOptions.Password
	}
	// The deadline is looked at before each expensive step: once it has passed the server has
	// given up on the request, and further work only delays other logins.
	if err := ctx.Err(); err != nil {
		return "", ReasonDeadline, err
	}
	id, err := h.cfg.Verifier.Verify(ctx, token)
	if err != nil {
		return "", reasonOf(err), err
	}
	d.Identity = id
	if !id.Expiry.After(h.cfg.Now()) {
		// Within the verifier's clock-skew leeway, but a user JWT must never outlive the token.
		return "", ReasonExpired, fmt.Errorf("%w: token expires at %s", kube.ErrExpired, id.Expiry.UTC().Format(time.RFC3339))
	}
	if err := ctx.Err(); err != nil {
		return "", ReasonDeadline, err
	}
	pol, err := h.cfg.Policies.Policy(id)
	d.Account, d.AccountWhy = pol.Account, pol.AccountWhy
	if d.Account == "" && err == nil {
		d.Account = h.cfg.Account
	}
	if errors.Is(err, kube.ErrNotSynced) {
		return "", ReasonNotReady, err
	}
	if err != nil {
		return "", reasonOf(err), err
	}
	d.Warnings = pol.Warnings
	src, reason, err := h.bound(ctx, id, req.ClientInformation.Host)
	if err != nil {
		return "", reason, err
	}
	if err := ctx.Err(); err != nil {
		return "", ReasonDeadline, err
	}

	// Server-config mode: the response's key signs the user JWT too.
	signer, issuerAccount := r.signer, ""
	if h.cfg.Operator != nil {
		// The user lands in the account whose key signs the user JWT.
		var ok bool
		if signer, issuerAccount, ok = h.cfg.Operator.keysFor(d.Account, h.cfg.Account).signerFor(d.Account); !ok {
			return "", ReasonAccountKeyMissing, fmt.Errorf("no signing key loaded for account %s", d.Account)
		}
	}
	userJWT, err := h.userJWT(req.UserNkey, id, pol.Permissions, d.Account, src, signer, issuerAccount)
	if err != nil {
		return "", ReasonInternal, err
	}
	return userJWT, "", nil
}

// userJWT builds and signs the user's JWT. Permissions are always explicit: a user JWT without
// them would get the account's defaults, often everything. src, if not empty, are the only
// source addresses (CIDRs) nats-server accepts the user from.
func (h *Handler) userJWT(userNkey string, id kube.Identity, p kube.Permissions, account string, src []string, signer nkeys.KeyPair, issuerAccount string) (string, error) {
	uc := jwt.NewUserClaims(userNkey)
	uc.Name = id.ConnectionName()
	// Server-config mode places the user in the account its audience names.
	uc.Audience = account
	uc.IssuerAccount = issuerAccount
	tags := id.Tags()
	uc.Tags = make(jwt.TagList, 0, len(tags))
	uc.Tags.Add(tags...)
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
	uc.Pub.Allow, uc.Pub.Deny = subjectList(p.PubAllow), subjectList(p.PubDeny)
	uc.Sub.Allow, uc.Sub.Deny = subjectList(p.SubAllow), subjectList(p.SubDeny)
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
	if len(src) > 0 {
		uc.Src = jwt.CIDRList(src)
	}
	// userNkey is a user public key: checkRequest made sure of it.
	tok, err := encodeJWT(&uc.ClaimsData, &uc.GenericFields, jwt.UserClaim, uc, signer)
	return bytesString(tok), err
}

func (h *Handler) record(d Decision) {
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.observe(d)
	}
	attrs := make([]slog.Attr, 0, 13)
	attrs = append(attrs,
		slog.String("result", d.Result),
		slog.String("reason", d.Reason),
		slog.Float64("duration_ms", float64(d.Duration.Microseconds())/1000),
	)
	if d.Identity.Namespace != "" {
		attrs = append(attrs, slog.String("namespace", d.Identity.Namespace), slog.String("serviceaccount", d.Identity.Name))
	}
	if d.Account != "" {
		attrs = append(attrs, slog.String("account", d.Account))
	}
	if d.Identity.PodName != "" {
		// The pod a bound token was issued for: which replica connected.
		attrs = append(attrs, slog.String("pod", d.Identity.PodName))
	}
	// What comes from the request, or from a ServiceAccount's annotations, is bounded here.
	if d.Server != "" {
		attrs = append(attrs, slog.String("server", clipValue(d.Server)))
	}
	if d.Client != "" {
		attrs = append(attrs, slog.String("client_host", clipValue(d.Client)))
	}
	if d.UserNkey != "" {
		attrs = append(attrs, slog.String("user_nkey", clipValue(d.UserNkey)))
	}
	if len(d.Warnings) > 0 {
		attrs = append(attrs, slog.Any("warnings", clipWarnings(d.Warnings)))
	}
	if d.Err != nil {
		attrs = append(attrs, slog.String("error", kube.Clip(d.Err.Error(), maxLogText)))
	}
	level := slog.LevelInfo
	if d.Result == ResultDropped {
		level = slog.LevelWarn
	}
	if p, ok := errors.AsType[*panicError](d.Err); ok {
		// A bug: the stack says where (it holds addresses, never a token's or key's bytes).
		attrs = append(attrs, slog.String("stack", string(p.stack)))
		level = slog.LevelError
	}
	h.log.LogAttrs(context.Background(), level, "callout decision", attrs...)
}
