package callout_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// rigNow is the handler's clock in a rig: fixed, so that a request built once (a fuzz corpus
// file) stays unexpired.
var rigNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// rigToken is the only token a rig's verifier accepts.
const rigToken = "rig-token"

// rig is a Handler on stub token and policy sources, with the keys of the nats-server that
// sends it requests; no NATS connection, no Kubernetes. Its keys come from fixed seeds, so the
// requests it builds verify against every rig.
type rig struct {
	t       testing.TB
	h       *callout.Handler
	issuer  nkeys.KeyPair // auth_callout.issuer
	server  nkeys.KeyPair // the nats-server's nkey
	serverX nkeys.KeyPair // the nats-server's curve key
	xkey    nkeys.KeyPair // the service's curve key (auth_callout.xkey), nil when not set
	// The public keys, for what runs inside a fuzz target (where r.t must not be used).
	issuerPub, serverPub, xkeyPub string
	reg                           *prometheus.Registry
	logs                          *testsupport.LogBuffer
	// now is the handler's clock, rigNow unless a test moves it.
	now time.Time
}

type rigOptions struct {
	encrypted bool
	// operator runs the handler in operator mode: the issuer is the callout account, and
	// user JWTs are signed by another account's key.
	operator bool
	// onKeys, if set, is called whenever the handler reads its keys: "signing" (the response's)
	// or, in operator mode, "target" (the user JWT's).
	onKeys func(which string)
	// verify replaces the stub verifier (which accepts rigToken only).
	verify func(ctx context.Context, token string) (kube.Identity, error)
	// policy replaces the stub policy source.
	policy func(id kube.Identity) (kube.Policy, error)
	// log receives the handler's log instead of rig.logs.
	log io.Writer
	// accountKeys, in operator mode, gives the key ring of a tenant account.
	accountKeys func(account string) *callout.KeyRing
	// bound and sources are the handler's bound-object check and source pinning (nil: off).
	bound   callout.BoundObjectChecker
	sources callout.SourcePinner
}

type funcVerifier func(ctx context.Context, token string) (kube.Identity, error)

func (f funcVerifier) Verify(ctx context.Context, token string) (kube.Identity, error) {
	return f(ctx, token)
}

type funcPolicies func(id kube.Identity) (kube.Policy, error)

func (f funcPolicies) Policy(id kube.Identity) (kube.Policy, error) { return f(id) }

// fixedKey makes the key pair of type prefix from a seed of b bytes.
func fixedKey(t testing.TB, prefix nkeys.PrefixByte, b byte) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreatePairWithRand(prefix, bytes.NewReader(bytes.Repeat([]byte{b}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	r := &rig{
		t: t, reg: prometheus.NewRegistry(), logs: &testsupport.LogBuffer{}, now: rigNow,
		issuer:  fixedKey(t, nkeys.PrefixByteAccount, 1),
		server:  fixedKey(t, nkeys.PrefixByteServer, 2),
		serverX: fixedKey(t, nkeys.PrefixByteCurve, 3),
	}
	r.issuerPub, r.serverPub = testsupport.PublicKey(t, r.issuer), testsupport.PublicKey(t, r.server)
	var xk *callout.XKey
	if o.encrypted {
		r.xkey = fixedKey(t, nkeys.PrefixByteCurve, 4)
		r.xkeyPub = testsupport.PublicKey(t, r.xkey)
		var err error
		if xk, err = callout.ParseXKey(testsupport.Seed(t, r.xkey)); err != nil {
			t.Fatal(err)
		}
	}
	if o.verify == nil {
		o.verify = func(_ context.Context, token string) (kube.Identity, error) {
			if token != rigToken {
				return kube.Identity{}, kube.ErrBadSignature
			}
			return kube.Identity{Namespace: "ns", Name: "app", UID: "uid-1", Expiry: rigNow.Add(time.Hour)}, nil
		}
	}
	if o.policy == nil {
		o.policy = func(id kube.Identity) (kube.Policy, error) {
			return kube.Policy{Permissions: kube.Permissions{PubAllow: []string{id.Namespace + ".>"}, SubAllow: []string{id.Namespace + ".>"}}}, nil
		}
	}
	if o.onKeys == nil {
		o.onKeys = func(string) {}
	}
	if o.log == nil {
		o.log = r.logs
	}
	signing := fixedRing(t, r.issuer)
	cfg := callout.HandlerConfig{
		Verifier: funcVerifier(o.verify), Policies: funcPolicies(o.policy), Bound: o.bound, Sources: o.sources,
		SigningKeys: func() *callout.KeyRing { o.onKeys("signing"); return signing() },
		XKey:        func() *callout.XKey { return xk },
		Account:     "APP",
		Logger:      slog.New(slog.NewJSONHandler(o.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:     callout.NewMetrics(r.reg),
		Now:         func() time.Time { return r.now },
	}
	if o.operator {
		target := fixedKey(t, nkeys.PrefixByteAccount, 6)
		targetRing := fixedRing(t, target)
		cfg.Account = testsupport.PublicKey(t, target)
		cfg.Operator = &callout.OperatorConfig{
			CalloutAccount: func() string { return r.issuerPub },
			TargetKeys:     func() *callout.KeyRing { o.onKeys("target"); return targetRing() },
			AccountKeys:    o.accountKeys,
		}
	}
	h, err := callout.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.h = h
	return r
}

// claims is a request as the rig's nats-server sends it, for a client with rigToken.
func (r *rig) claims() *natsjwt.AuthorizationRequestClaims {
	rc := natsjwt.NewAuthorizationRequestClaims(testsupport.PublicKey(r.t, r.issuer))
	rc.Audience = "nats-authorization-request"
	rc.UserNkey = testsupport.PublicKey(r.t, fixedKey(r.t, nkeys.PrefixByteUser, 5))
	rc.Server = natsjwt.ServerID{Name: "nats-0", ID: testsupport.PublicKey(r.t, r.server)}
	rc.ClientInformation.Host = "10.0.0.7"
	rc.ConnectOptions.Token = rigToken
	// Unexpired for the rig's clock and for the JWT library's, which reads the real one.
	rc.Expires = rigNow.AddDate(100, 0, 0).Unix()
	if r.xkey != nil {
		rc.Server.XKey = testsupport.PublicKey(r.t, r.serverX)
	}
	return rc
}

// request signs rc with the server's key and, when the rig is encrypted, seals it to the
// service's xkey with the header nats-server adds.
func (r *rig) request(rc *natsjwt.AuthorizationRequestClaims) ([]byte, nats.Header) {
	r.t.Helper()
	tok, err := rc.Encode(r.server)
	if err != nil {
		r.t.Fatal(err)
	}
	if r.xkey == nil {
		return []byte(tok), nats.Header{}
	}
	sealed, err := r.serverX.Seal([]byte(tok), testsupport.PublicKey(r.t, r.xkey))
	if err != nil {
		r.t.Fatal(err)
	}
	return sealed, nats.Header{"Nats-Server-Xkey": []string{testsupport.PublicKey(r.t, r.serverX)}}
}

// response opens (when the rig is encrypted) and decodes a reply, and checks that it is a
// response the server would take: signed by the issuer, for the server, naming a user nkey,
// carrying either a user JWT or an error.
func (r *rig) response(reply []byte) (*natsjwt.AuthorizationResponseClaims, error) {
	if r.xkey != nil {
		opened, err := r.serverX.Open(reply, r.xkeyPub)
		if err != nil {
			return nil, fmt.Errorf("response not sealed to the server's xkey: %w", err)
		}
		reply = opened
	}
	rc, err := natsjwt.DecodeAuthorizationResponseClaims(string(reply))
	switch {
	case err != nil:
		return nil, err
	case rc.Issuer != r.issuerPub:
		return nil, errors.New("response not signed by the issuer")
	case rc.Audience != r.serverPub:
		return nil, errors.New("response not for the server")
	case !nkeys.IsValidPublicUserKey(rc.Subject):
		return nil, errors.New("response names no user nkey")
	case (rc.Jwt == "") == (rc.Error == ""):
		return nil, errors.New("response carries neither or both of a user JWT and an error")
	}
	return rc, nil
}

// count reads nats_callout_requests_total{result,reason}.
func (r *rig) count(result, reason string) float64 {
	r.t.Helper()
	return testsupport.Metric(r.t, r.reg, "nats_callout_requests_total", "result", result, "reason", reason)
}

func TestRigAnswersWellFormedRequests(t *testing.T) {
	for _, o := range []rigOptions{{}, {encrypted: true}, {operator: true}, {operator: true, encrypted: true}} {
		r := newRig(t, o)
		data, hdr := r.request(r.claims())
		reply, d := r.h.Handle(context.Background(), data, hdr)
		if d.Result != callout.ResultAllowed {
			t.Fatalf("%+v: %s (%s: %v), want allowed", o, d.Result, d.Reason, d.Err)
		}
		if rc, err := r.response(reply); err != nil || rc.Jwt == "" {
			t.Fatalf("%+v: response %v, want a user JWT", o, err)
		}
	}
}

// craftedCurveKey is a string that passes for a curve public key (prefix X, valid checksum)
// but encodes n key bytes instead of 32.
func craftedCurveKey(t testing.TB, n int) string {
	t.Helper()
	k, err := nkeys.Encode(nkeys.PrefixByteCurve, bytes.Repeat([]byte{7}, n))
	if err != nil {
		t.Fatal(err)
	}
	return string(k)
}

// A Nats-Server-Xkey header the curve key decoder cannot hold used to make nkeys index out
// of range while opening the request, killing the process.
func TestCraftedXKeyHeaderIsDropped(t *testing.T) {
	r := newRig(t, rigOptions{encrypted: true})
	sealedLike := append([]byte("xkv1"), bytes.Repeat([]byte{0}, 64)...)
	for name, hdr := range map[string]string{
		"58 base32 characters":               strings.Repeat("A", 58),
		"100 base32 characters":              strings.Repeat("X", 100),
		"valid checksum, 33 key bytes":       craftedCurveKey(t, 33),
		"valid checksum, 31 key bytes":       craftedCurveKey(t, 31),
		"an account key":                     testsupport.PublicKey(t, r.issuer),
		"not base32":                         "X!!",
		"a valid curve key, body not sealed": testsupport.PublicKey(t, r.serverX),
	} {
		t.Run(name, func(t *testing.T) {
			before := r.count(callout.ResultDropped, callout.ReasonEncryption)
			reply, d := r.h.Handle(context.Background(), sealedLike, nats.Header{"Nats-Server-Xkey": []string{hdr}})
			if reply != nil || d.Result != callout.ResultDropped || d.Reason != callout.ReasonEncryption {
				t.Errorf("got %s (%s: %v), reply %d bytes; want dropped as %s", d.Result, d.Reason, d.Err, len(reply), callout.ReasonEncryption)
			}
			if got := r.count(callout.ResultDropped, callout.ReasonEncryption); got != before+1 {
				t.Errorf("requests_total{dropped,%s} went from %v to %v, want +1", callout.ReasonEncryption, before, got)
			}
		})
	}
}

// A panic while deciding one request costs that request only: it is dropped, counted as
// internal_error and logged with its stack, and the handler answers the next one.
func TestPanicDropsTheRequestOnly(t *testing.T) {
	r := newRig(t, rigOptions{policy: func(id kube.Identity) (kube.Policy, error) {
		if id.Name == "app" {
			var m map[string]int
			m["boom"]++ //nolint:staticcheck // a nil map write on purpose: a bug reachable from one request
		}
		return kube.Policy{Permissions: kube.Permissions{PubAllow: []string{"x"}, SubAllow: []string{"x"}}}, nil
	}})
	data, hdr := r.request(r.claims())
	reply, d := r.h.Handle(context.Background(), data, hdr)
	if reply != nil || d.Result != callout.ResultDropped || d.Reason != callout.ReasonInternal || !errors.Is(d.Err, callout.ErrPanic) {
		t.Fatalf("got %s (%s: %v), reply %d bytes; want dropped as %s (panic)", d.Result, d.Reason, d.Err, len(reply), callout.ReasonInternal)
	}
	if got := r.count(callout.ResultDropped, callout.ReasonInternal); got != 1 {
		t.Errorf("requests_total{dropped,internal_error} = %v, want 1", got)
	}
	logs := r.logs.String()
	line := grepLines(logs, `"reason":"internal_error"`)
	for _, want := range []string{`"level":"ERROR"`, `"msg":"callout decision"`, "assignment to entry in nil map", `"stack":"goroutine`, "request_test.go", `"user_nkey":"U`} {
		if !strings.Contains(line, want) {
			t.Errorf("decision log lacks %s:\n%s", want, line)
		}
	}
	if strings.Contains(logs, rigToken) || strings.Contains(logs, string(testsupport.Seed(t, r.issuer))) {
		t.Errorf("the token or a seed appears in the log:\n%s", logs)
	}

	// The same handler answers a request that does not reach the bug.
	rc := r.claims()
	rc.ConnectOptions.Token = "another"
	data, hdr = r.request(rc)
	if reply, d := r.h.Handle(context.Background(), data, hdr); reply == nil || d.Result != callout.ResultDenied {
		t.Fatalf("after the panic: %s (%s: %v), want denied with a reply", d.Result, d.Reason, d.Err)
	}
}

// panickyVerifier panics for one token and passes the others on.
type panickyVerifier struct {
	next  callout.TokenVerifier
	token string
}

func (p panickyVerifier) Verify(ctx context.Context, token string) (kube.Identity, error) {
	if token == p.token {
		panic("verifier bug")
	}
	return p.next.Verify(ctx, token)
}

// The sidecar outlives a request that panics: its client gets no answer, the next client is
// admitted on the same connection.
func TestServiceSurvivesPanic(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, k.service)}, authTimeout: 1})
	const bad = "token-that-trips-a-bug"
	sc := w.startSidecar(sidecarConfig{url: srv.url(), creds: fixedCreds(t, k.service), keys: fixedRing(t, k.issuer),
		verifier: panickyVerifier{next: w.verifier, token: bad}, requestTimeout: 800 * time.Millisecond})
	sc.waitReady()
	good := w.token("shop", "api")

	if nc, err := nats.Connect(srv.url(), nats.Token(bad), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("the request that panicked was admitted")
	}
	mustConnect(t, srv.url(), good)
	if got := sc.metric("nats_callout_requests_total", "result", callout.ResultDropped, "reason", callout.ReasonInternal); got != 1 {
		t.Errorf("requests_total{dropped,internal_error} = %v, want 1", got)
	}
	if !strings.Contains(w.logs.String(), "panic: verifier bug") {
		t.Errorf("no log of the panic:\n%s", lastLines(w.logs.String(), 5))
	}
}

// With an xkey configured every request must come sealed, with the server's key in the header
// equal to the signed one; anything else is dropped as encryption_mismatch.
func TestEncryptionRules(t *testing.T) {
	r := newRig(t, rigOptions{encrypted: true})
	plain, err := r.claims().Encode(r.server)
	if err != nil {
		t.Fatal(err)
	}
	other := fixedKey(t, nkeys.PrefixByteCurve, 9)
	sealedByOther, err := other.Seal([]byte(plain), testsupport.PublicKey(t, r.xkey))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		data []byte
		hdr  nats.Header
	}{
		"plaintext":                      {[]byte(plain), nil},
		"plaintext with an empty header": {[]byte(plain), nats.Header{"Nats-Server-Xkey": []string{""}}},
		// Sealed by another curve key, which the header names: it opens, but the server that
		// signed the request named its own key.
		"header differs from the signed xkey": {sealedByOther, nats.Header{"Nats-Server-Xkey": []string{testsupport.PublicKey(t, other)}}},
	} {
		t.Run(name, func(t *testing.T) {
			before := r.count(callout.ResultDropped, callout.ReasonEncryption)
			reply, d := r.h.Handle(context.Background(), c.data, c.hdr)
			if reply != nil || d.Result != callout.ResultDropped || d.Reason != callout.ReasonEncryption {
				t.Errorf("got %s (%s: %v), reply %d bytes; want dropped as %s", d.Result, d.Reason, d.Err, len(reply), callout.ReasonEncryption)
			}
			if got := r.count(callout.ResultDropped, callout.ReasonEncryption); got != before+1 {
				t.Errorf("requests_total{dropped,%s} went from %v to %v, want +1", callout.ReasonEncryption, before, got)
			}
		})
	}

	// Without an xkey, a sealed request is a mismatch too, and plaintext is answered.
	r = newRig(t, rigOptions{})
	if _, d := r.h.Handle(context.Background(), sealedByOther, nats.Header{"Nats-Server-Xkey": []string{testsupport.PublicKey(t, other)}}); d.Reason != callout.ReasonEncryption {
		t.Errorf("sealed request without an xkey: %s (%s: %v), want dropped as %s", d.Result, d.Reason, d.Err, callout.ReasonEncryption)
	}
	if reply, d := r.h.Handle(context.Background(), []byte(plain), nil); d.Result != callout.ResultAllowed || reply == nil {
		t.Errorf("plaintext request without an xkey: %s (%s: %v), want allowed", d.Result, d.Reason, d.Err)
	}
}

// deadlineCtx is a context whose deadline passes when the test says so, in the middle of a step.
type deadlineCtx struct {
	context.Context
	passed atomic.Bool
}

func (c *deadlineCtx) Err() error {
	if c.passed.Load() {
		return context.DeadlineExceeded
	}
	return nil
}

// A request whose deadline passes is dropped before the next expensive step: token
// verification, the policy lookup, building and signing the user JWT.
func TestDeadlineStopsWork(t *testing.T) {
	for _, pass := range []string{"opening the request", "token verification", "policy lookup"} {
		t.Run("deadline passes during "+pass, func(t *testing.T) {
			ctx := &deadlineCtx{Context: context.Background()}
			var ran []string
			step := func(name string) {
				ran = append(ran, name)
				if name == pass {
					ctx.passed.Store(true)
				}
			}
			r := newRig(t, rigOptions{
				operator: true,
				onKeys: func(which string) {
					if which == "signing" {
						step("opening the request")
					} else {
						step("user JWT")
					}
				},
				verify: func(context.Context, string) (kube.Identity, error) {
					step("token verification")
					return kube.Identity{Namespace: "ns", Name: "app", UID: "uid-1", Expiry: rigNow.Add(time.Hour)}, nil
				},
				policy: func(kube.Identity) (kube.Policy, error) {
					step("policy lookup")
					return kube.Policy{Permissions: kube.Permissions{PubAllow: []string{"x"}, SubAllow: []string{"x"}}}, nil
				},
			})
			data, hdr := r.request(r.claims())
			reply, d := r.h.Handle(ctx, data, hdr)
			if reply != nil || d.Result != callout.ResultDropped || d.Reason != callout.ReasonDeadline {
				t.Errorf("got %s (%s: %v), reply %d bytes; want dropped as %s", d.Result, d.Reason, d.Err, len(reply), callout.ReasonDeadline)
			}
			if ran[len(ran)-1] != pass {
				t.Errorf("steps run: %q; want none after %q", ran, pass)
			}
		})
	}
}

// decisionLines returns the rig's decision log lines.
func (r *rig) decisionLines() []string {
	var out []string
	for _, l := range strings.Split(r.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"callout decision"`) {
			out = append(out, l)
		}
	}
	return out
}

// Whatever length a request's strings have, the decision log line quoting them stays short.
func TestRequestValuesAreClippedInTheLog(t *testing.T) {
	huge := strings.Repeat("é", 5000) // 10 KB, cut on a character boundary
	r := newRig(t, rigOptions{policy: func(kube.Identity) (kube.Policy, error) {
		ws := make([]string, 1000)
		for i := range ws {
			ws[i] = "allow entry " + huge + " dropped"
		}
		return kube.Policy{Permissions: kube.Permissions{PubAllow: []string{"x"}, SubAllow: []string{"x"}}, Warnings: ws}, nil
	}})
	for name, mut := range map[string]func(*natsjwt.AuthorizationRequestClaims){
		"user nkey": func(rc *natsjwt.AuthorizationRequestClaims) { rc.UserNkey = "U" + huge },
		"audience":  func(rc *natsjwt.AuthorizationRequestClaims) { rc.Audience = huge },
		"server name, unknown issuer": func(rc *natsjwt.AuthorizationRequestClaims) {
			rc.Server.Name, rc.ClientInformation.Host = huge, huge
			rc.Subject = testsupport.PublicKey(t, fixedKey(t, nkeys.PrefixByteAccount, 8))
		},
		"server name, allowed with warnings": func(rc *natsjwt.AuthorizationRequestClaims) { rc.Server.Name, rc.ClientInformation.Host = huge, huge },
	} {
		t.Run(name, func(t *testing.T) {
			rc := r.claims()
			mut(rc)
			data, hdr := r.request(rc)
			before := len(r.decisionLines())
			r.h.Handle(context.Background(), data, hdr)
			lines := r.decisionLines()
			if len(lines) != before+1 {
				t.Fatalf("%d new decision lines, want 1", len(lines)-before)
			}
			line := lines[len(lines)-1]
			if len(line) > 4096 || !strings.Contains(line, "…[truncated, 100") {
				t.Errorf("decision line of %d bytes, want at most 4 KiB with a truncation marker:\n%.600s", len(line), line)
			}
		})
	}
}

// Each unknown issuer is logged at most once a minute, and the handler remembers a bounded
// number of them however many distinct ones requests name.
func TestUnknownIssuersAreBounded(t *testing.T) {
	r := newRig(t, rigOptions{})
	const msg = "nats-server expects responses signed by an issuer account key the service does not hold"
	send := func(n int) {
		for range n {
			rc := r.claims()
			rc.Subject = testsupport.PublicKey(t, newAccount(t))
			data, hdr := r.request(rc)
			if _, d := r.h.Handle(context.Background(), data, hdr); d.Reason != callout.ReasonUnknownIssuer {
				t.Fatalf("got %s (%s: %v), want %s", d.Result, d.Reason, d.Err, callout.ReasonUnknownIssuer)
			}
		}
	}
	logged := func() int { return strings.Count(r.logs.String(), msg) }

	send(500)
	if n := r.h.UnknownIssuerLogEntries(); n > 64 {
		t.Errorf("%d unknown issuers remembered, want at most 64", n)
	}
	if n := logged(); n != 64 {
		t.Errorf("%d unknown issuers logged in a minute, want 64", n)
	}
	if got := r.count(callout.ResultDropped, callout.ReasonUnknownIssuer); got != 500 {
		t.Errorf("requests_total{dropped,unknown_issuer} = %v, want 500 (every request counted)", got)
	}
	// A minute later the old entries make room for new ones.
	r.now = r.now.Add(time.Minute)
	send(10)
	if n := logged(); n != 74 {
		t.Errorf("%d unknown issuers logged, want 74 after a minute", n)
	}
	if n := r.h.UnknownIssuerLogEntries(); n > 64 {
		t.Errorf("%d unknown issuers remembered, want at most 64", n)
	}
}

// A real nats-server without auth_callout.xkey sends plaintext requests: a sidecar with an xkey
// refuses them (no answer) instead of answering in plaintext.
func TestPlaintextServerRefusedBySidecarWithXKey(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, true)
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, k.service)}, authTimeout: 1})
	xk, err := callout.ParseXKey(testsupport.Seed(t, k.xkey))
	if err != nil {
		t.Fatal(err)
	}
	sc := w.startSidecar(sidecarConfig{url: srv.url(), creds: fixedCreds(t, k.service), keys: fixedRing(t, k.issuer),
		xkey: func() *callout.XKey { return xk }, requestTimeout: 800 * time.Millisecond})
	sc.waitReady()
	if nc, err := nats.Connect(srv.url(), nats.Token(w.token("shop", "api")), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("admitted through a plaintext callout by a sidecar with an xkey")
	}
	if got := sc.metric("nats_callout_requests_total", "result", callout.ResultDropped, "reason", callout.ReasonEncryption); got != 1 {
		t.Errorf("requests_total{dropped,encryption_mismatch} = %v, want 1", got)
	}
}
