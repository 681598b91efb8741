package callout_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// modes runs a test against each server configuration the service supports.
func modes(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, m := range []struct {
		name string
		o    envOptions
	}{
		{"plain", envOptions{}},
		{"encrypted", envOptions{encrypted: true}},
		{"operator", envOptions{operator: true}},
		{"operator encrypted", envOptions{operator: true, encrypted: true}},
	} {
		t.Run(m.name, func(t *testing.T) { fn(t, newEnv(t, m.o)) })
	}
}

// expectPublish checks that a publish on a fresh connection is delivered (allowed) or refused
// with a permissions violation (denied).
func expectPublish(t *testing.T, e *env, token, subject string, allowed bool) {
	t.Helper()
	admin := e.admin()
	got, err := admin.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, errs, err := e.connect(token)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish(subject, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	if allowed {
		if _, err := got.NextMsg(2 * time.Second); err != nil {
			t.Errorf("publish to %q: not delivered (%v), want delivered", subject, err)
		}
		return
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "Publish") {
			t.Errorf("publish to %q: got error %v, want a publish permissions violation", subject, err)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("publish to %q: no permissions violation, want refused", subject)
	}
	if m, err := got.NextMsg(50 * time.Millisecond); err == nil {
		t.Errorf("publish to %q: delivered %q, want refused", subject, m.Data)
	}
}

// expectSubscribe checks that a subscription on a fresh connection receives (allowed) or is
// refused with a permissions violation (denied).
func expectSubscribe(t *testing.T, e *env, token, subject, sendTo string, allowed bool) {
	t.Helper()
	nc, errs, err := e.connect(token)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if !allowed {
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "Subscription") {
				t.Errorf("subscribe to %q: got error %v, want a subscription permissions violation", subject, err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("subscribe to %q: no permissions violation, want refused", subject)
		}
		return
	}
	admin := e.admin()
	if err := admin.Publish(sendTo, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(2 * time.Second); err != nil {
		t.Errorf("subscribe to %q: message on %q not received (%v), want received", subject, sendTo, err)
	}
	select {
	case err := <-errs:
		t.Errorf("subscribe to %q: unexpected error %v", subject, err)
	default:
	}
}

func TestPermissions(t *testing.T) {
	modes(t, func(t *testing.T, e *env) {
		token, _ := e.serviceAccount("team-a", "orders.api", map[string]string{
			"nats.io/allowed-pub-subjects": "shared.events.>, audit.team-a",
			"nats.io/allowed-sub-subjects": "shared.commands.*",
			"nats.io/denied-pub-subjects":  "team-a.secret.>",
			"nats.io/denied-sub-subjects":  "team-a.private",
		})
		for _, c := range []struct {
			subject string
			allowed bool
		}{
			{"team-a.orders.created", true},    // default <ns>.>
			{"shared.events.order.paid", true}, // annotation
			{"audit.team-a", true},             // annotation, literal
			{"team-a.secret.key", false},       // denied annotation
			{"team-b.orders", false},           // other namespace
			{"shared.commands.x", false},       // only subscribe granted
			{"audit.team-b", false},
			{"_INBOX.abc", false},
			{"$SYS.REQ.SERVER.PING", false},
		} {
			t.Run("pub "+c.subject, func(t *testing.T) { expectPublish(t, e, token, c.subject, c.allowed) })
		}
		for _, c := range []struct {
			subject, sendTo string
			allowed         bool
		}{
			{"team-a.>", "team-a.x.y", true},
			{"shared.commands.*", "shared.commands.ship", true},
			{"_INBOX_team-a_orders_api.>", "_INBOX_team-a_orders_api.abc.1", true},
			{"team-a.private", "", false},
			{"team-b.>", "", false},
			{"_INBOX.>", "", false},
			{"_INBOX_team-b_api.>", "", false},
			{">", "", false},
		} {
			t.Run("sub "+c.subject, func(t *testing.T) { expectSubscribe(t, e, token, c.subject, c.sendTo, c.allowed) })
		}
	})
}

func TestRequestReply(t *testing.T) {
	modes(t, func(t *testing.T, e *env) {
		clientTok, _ := e.serviceAccount("shop", "client", nil)
		serverTok, _ := e.serviceAccount("shop", "backend", nil)

		backend, berrs, err := e.connect(serverTok)
		if err != nil {
			t.Fatal(err)
		}
		defer backend.Close()
		// A responder answers once, then tries a second reply to the same inbox.
		_, err = backend.Subscribe("shop.price", func(m *nats.Msg) {
			_ = m.Respond([]byte("42"))
			_ = m.Respond([]byte("again"))
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := backend.Flush(); err != nil {
			t.Fatal(err)
		}

		client, _, err := e.connect(clientTok, nats.CustomInboxPrefix(kube.InboxPrefix("shop", "client")))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		inbox := client.NewInbox()
		replies, err := client.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		if err := client.PublishRequest("shop.price", inbox, nil); err != nil {
			t.Fatal(err)
		}
		m, err := replies.NextMsg(2 * time.Second)
		if err != nil || string(m.Data) != "42" {
			t.Fatalf("reply: got %v %v, want 42", m, err)
		}
		if m, err := replies.NextMsg(200 * time.Millisecond); err == nil {
			t.Errorf("second reply delivered (%q); a responder may answer once", m.Data)
		}
		select {
		case err := <-berrs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("second reply: got %v, want a permissions violation", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("second reply: no permissions violation")
		}

		// The request helper works with the private prefix too.
		if m, err := client.Request("shop.price", nil, 2*time.Second); err != nil || string(m.Data) != "42" {
			t.Errorf("Request: got %v %v", m, err)
		}
		// Without the private prefix the client cannot receive replies.
		plain, perrs, err := e.connect(clientTok)
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		if _, err := plain.Request("shop.price", nil, 500*time.Millisecond); err == nil {
			t.Error("request with the shared _INBOX prefix succeeded, want refused")
		}
		select {
		case err := <-perrs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("got %v, want a permissions violation", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("no permissions violation for the shared inbox")
		}
	})
}

func TestAllowResponsesOff(t *testing.T) {
	e := newEnv(t, envOptions{})
	clientTok, _ := e.serviceAccount("shop", "client", nil)
	silentTok, _ := e.serviceAccount("shop", "silent", map[string]string{"nats.io/allow-responses": "false"})
	silent, serrs, err := e.connect(silentTok)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, err := silent.Subscribe("shop.q", func(m *nats.Msg) { _ = m.Respond([]byte("x")) }); err != nil {
		t.Fatal(err)
	}
	_ = silent.Flush()
	client, _, err := e.connect(clientTok, nats.CustomInboxPrefix(kube.InboxPrefix("shop", "client")))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Request("shop.q", nil, 300*time.Millisecond); err == nil {
		t.Error("reply delivered from a ServiceAccount with allow-responses false")
	}
	select {
	case err := <-serrs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("got %v, want a permissions violation", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("no permissions violation for the reply")
	}
}

func TestHostileTokens(t *testing.T) {
	modes(t, func(t *testing.T, e *env) {
		good, sa := e.serviceAccount("ns1", "app", nil)
		uid := string(sa.UID)
		now := time.Now()
		claims := func(mut func(c jwt.MapClaims)) string {
			c := jwt.MapClaims{
				"iss": testIssuer, "aud": []string{audience}, "sub": "system:serviceaccount:ns1:app",
				"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
				"kubernetes.io": map[string]any{
					"namespace": "ns1", "serviceaccount": map[string]any{"name": "app", "uid": uid},
				},
			}
			mut(c)
			tok, err := e.issuer.Sign(c)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		parts := strings.Split(good, ".")
		tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(b64Decode(t, parts[1]), `"exp":`, `"exp":1`, 1))) + "." + parts[2]
		var header struct {
			Kid string `json:"kid"`
		}
		if err := json.Unmarshal([]byte(b64Decode(t, parts[0])), &header); err != nil {
			t.Fatal(err)
		}
		otherIssuer, err := kubefake.NewTokenIssuer(testIssuer)
		if err != nil {
			t.Fatal(err)
		}
		unknownKid, err := otherIssuer.ServiceAccountToken("ns1", "app", uid, []string{audience}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"iss": testIssuer, "aud": audience, "sub": "system:serviceaccount:ns1:app",
			"exp": now.Add(time.Hour).Unix(), "kubernetes.io": map[string]any{"namespace": "ns1", "serviceaccount": map[string]any{"name": "app", "uid": uid}}}).
			SignedString(jwt.UnsafeAllowNoneSignatureType)
		hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": testIssuer, "aud": audience, "sub": "system:serviceaccount:ns1:app",
			"exp": now.Add(time.Hour).Unix(), "kubernetes.io": map[string]any{"namespace": "ns1", "serviceaccount": map[string]any{"name": "app", "uid": uid}}})
		hs.Header["kid"] = header.Kid
		hsTok, _ := hs.SignedString(e.issuer.JWKS())

		_, deleting := e.serviceAccount("ns1", "leaving", nil)
		leavingTok, _ := e.issuer.ServiceAccountToken("ns1", "leaving", string(deleting.UID), []string{audience}, time.Hour)
		deleting.DeletionTimestamp = &metav1.Time{Time: now}
		deleting.Finalizers = []string{"example.com/hold"}
		if _, err := e.kube.Update(context.Background(), deleting); err != nil {
			t.Fatal(err)
		}
		testsupport.WaitFor(t, "deletion seen", 10*time.Second, func() bool {
			_, err := e.store.Policy(kube.Identity{Namespace: "ns1", Name: "leaving", UID: string(deleting.UID)})
			return errors.Is(err, kube.ErrServiceAccountDeleting)
		})
		ghost, _ := e.issuer.ServiceAccountToken("ns1", "ghost", "uid-ghost", []string{audience}, time.Hour)
		stale, _ := e.issuer.ServiceAccountToken("ns1", "app", "uid-of-an-earlier-app", []string{audience}, time.Hour)

		cases := []struct {
			name, token, reason string
		}{
			{"missing", "", "no_token"},
			{"garbage", "not-a-jwt", "malformed_token"},
			{"expired", claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() }), "expired"},
			{"not yet valid", claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() }), "not_yet_valid"},
			{"wrong issuer", claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), "wrong_issuer"},
			{"wrong audience", claims(func(c jwt.MapClaims) { c["aud"] = []string{"vault"} }), "wrong_audience"},
			{"alg none", none, "bad_signature"},
			{"HS256 keyed with the JWKS", hsTok, "bad_signature"},
			{"unknown kid", unknownKid, "bad_signature"},
			{"tampered payload", tampered, "bad_signature"},
			{"missing kubernetes.io", claims(func(c jwt.MapClaims) { delete(c, "kubernetes.io") }), "bad_claims"},
			{"sub disagrees", claims(func(c jwt.MapClaims) { c["sub"] = "system:serviceaccount:kube-system:admin" }), "bad_claims"},
			{"no exp", claims(func(c jwt.MapClaims) { delete(c, "exp") }), "bad_claims"},
			{"ServiceAccount missing", ghost, "serviceaccount_not_found"},
			{"ServiceAccount being deleted", leavingTok, "serviceaccount_deleting"},
			{"uid mismatch", stale, "serviceaccount_uid_mismatch"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				before := requests(t, e, callout.ResultDenied, c.reason)
				start := time.Now()
				nc, _, err := e.connect(c.token)
				if err == nil {
					nc.Close()
					t.Fatal("connected, want Authorization Violation")
				}
				if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
					t.Errorf("got %v, want Authorization Violation", err)
				}
				if d := time.Since(start); d > 1500*time.Millisecond {
					t.Errorf("refusal took %s: the service must answer, not let the server time out", d)
				}
				if after := requests(t, e, callout.ResultDenied, c.reason); after != before+1 {
					t.Errorf("requests_total{denied,%s}: got %v, want %v\nlogs:\n%s", c.reason, after, before+1, lastLines(e.logs.String(), 3))
				}
			})
		}
		// And the good token still works.
		nc, _, err := e.connect(good)
		if err != nil {
			t.Fatalf("good token: %v", err)
		}
		nc.Close()
		if strings.Contains(e.logs.String(), good) || strings.Contains(e.logs.String(), parts[2]) {
			t.Error("a token appears in the log")
		}
	})
}

// requests reads nats_callout_requests_total{result,reason} from the service's registry.
func requests(t *testing.T, e *env, result, reason string) float64 {
	t.Helper()
	return testsupport.Metric(t, e.reg, "nats_callout_requests_total", "result", result, "reason", reason)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func b64Decode(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestForgedRequestGetsNoReply(t *testing.T) {
	for _, o := range []envOptions{{}, {encrypted: true}, {operator: true}, {operator: true, encrypted: true}} {
		encrypted := o.encrypted
		t.Run(fmt.Sprintf("encrypted=%v operator=%v", o.encrypted, o.operator), func(t *testing.T) {
			e := newEnv(t, o)
			token, _ := e.serviceAccount("ns", "app", nil)
			serverKP, _ := nkeys.CreateServer()
			serverX, _ := nkeys.CreateCurveKeys()
			otherServer, _ := nkeys.CreateServer()
			otherAccount, _ := nkeys.CreateAccount()

			// build makes a request as nats-server would, then lets a case spoil it.
			build := func(signer nkeys.KeyPair, mut func(*natsjwt.AuthorizationRequestClaims)) ([]byte, nats.Header) {
				userKP, _ := nkeys.CreateUser()
				rc := natsjwt.NewAuthorizationRequestClaims(testsupport.PublicKey(t, e.keys.issuer))
				rc.Audience = "nats-authorization-request"
				rc.UserNkey = testsupport.PublicKey(t, userKP)
				rc.Server = natsjwt.ServerID{Name: "n1", ID: testsupport.PublicKey(t, serverKP)}
				rc.ConnectOptions.Token = token
				rc.Expires = time.Now().Add(2 * time.Second).Unix()
				if encrypted {
					rc.Server.XKey = testsupport.PublicKey(t, serverX)
				}
				if mut != nil {
					mut(rc)
				}
				tok, err := rc.Encode(signer)
				if err != nil {
					t.Fatal(err)
				}
				if !encrypted {
					return []byte(tok), nats.Header{}
				}
				sealed, err := serverX.Seal([]byte(tok), testsupport.PublicKey(t, e.keys.xkey))
				if err != nil {
					t.Fatal(err)
				}
				return sealed, nats.Header{"Nats-Server-Xkey": []string{testsupport.PublicKey(t, serverX)}}
			}
			type req struct {
				data []byte
				hdr  nats.Header
			}
			mk := func(data []byte, hdr nats.Header) req { return req{data, hdr} }
			cases := map[string]req{
				"signed by another server key": mk(build(otherServer, nil)),
				"not a JWT":                    {[]byte("hello"), nats.Header{}},
				"expired":                      mk(build(serverKP, func(rc *natsjwt.AuthorizationRequestClaims) { rc.Expires = time.Now().Add(-time.Minute).Unix() })),
				"wrong audience":               mk(build(serverKP, func(rc *natsjwt.AuthorizationRequestClaims) { rc.Audience = "x" })),
				"unknown issuer":               mk(build(serverKP, func(rc *natsjwt.AuthorizationRequestClaims) { rc.Subject = testsupport.PublicKey(t, otherAccount) })),
			}
			if encrypted {
				good, _ := build(serverKP, nil)
				other, _ := nkeys.CreateCurveKeys()
				cases["xkey header differs from the signed one"] = req{good, nats.Header{"Nats-Server-Xkey": []string{testsupport.PublicKey(t, other)}}}
				plain, _ := build(serverKP, func(rc *natsjwt.AuthorizationRequestClaims) { rc.Server.XKey = testsupport.PublicKey(t, other) })
				cases["sealed by another key"] = req{plain, nats.Header{"Nats-Server-Xkey": []string{testsupport.PublicKey(t, other)}}}
			}
			for name, r := range cases {
				t.Run(name, func(t *testing.T) {
					reply, d := e.handler.Handle(context.Background(), r.data, r.hdr)
					if reply != nil || d.Result != callout.ResultDropped {
						t.Errorf("got result %s (%s), reply %d bytes; want dropped with no reply", d.Result, d.Reason, len(reply))
					}
				})
			}
			// Control: a well-formed request signed by the server it names is answered.
			data, hdr := build(serverKP, nil)
			reply, d := e.handler.Handle(context.Background(), data, hdr)
			if d.Result != callout.ResultAllowed || reply == nil {
				t.Fatalf("well-formed request: %s (%s: %v), want allowed", d.Result, d.Reason, d.Err)
			}
			if encrypted {
				if reply, err := serverX.Open(reply, testsupport.PublicKey(t, e.keys.xkey)); err != nil {
					t.Fatalf("response not sealed to the server's xkey: %v", err)
				} else {
					data = reply
				}
			} else {
				data = reply
			}
			rc, err := natsjwt.DecodeAuthorizationResponseClaims(string(data))
			if err != nil || rc.Jwt == "" || rc.Audience != testsupport.PublicKey(t, serverKP) {
				t.Fatalf("response %+v %v: want a user JWT for server %s", rc, err, testsupport.PublicKey(t, serverKP))
			}
			if want, bad := e.handler.UnknownIssuer(time.Minute); !bad || want != testsupport.PublicKey(t, otherAccount) {
				t.Errorf("unknown issuer reported as %q, want %s", want, testsupport.PublicKey(t, otherAccount))
			}
		})
	}
}

func TestAnnotationUpdateReachesNextConnection(t *testing.T) {
	e := newEnv(t, envOptions{})
	token, sa := e.serviceAccount("ns", "app", nil)
	expectPublish(t, e, token, "metrics.cpu", false)
	sa.Annotations = map[string]string{"nats.io/allowed-pub-subjects": "metrics.>"}
	if _, err := e.kube.Update(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "annotation in cache", 10*time.Second, func() bool {
		p, err := e.store.Policy(kube.Identity{Namespace: "ns", Name: "app", UID: string(sa.UID)})
		return err == nil && fmt.Sprint(p.Permissions.PubAllow) != fmt.Sprint([]string{"ns.>"})
	})
	expectPublish(t, e, token, "metrics.cpu", true)
}

func TestInvalidDenyRefusesConnection(t *testing.T) {
	e := newEnv(t, envOptions{})
	token, _ := e.serviceAccount("ns", "app", map[string]string{"nats.io/denied-pub-subjects": "ns.secret.>, bad subject"})
	if nc, _, err := e.connect(token); err == nil {
		nc.Close()
		t.Fatal("connected with an invalid deny annotation, want refused")
	}
	if got := requests(t, e, callout.ResultDenied, "invalid_policy"); got != 1 {
		t.Errorf("requests_total{denied,invalid_policy} = %v, want 1", got)
	}
}

func TestUserJWTExpiry(t *testing.T) {
	e := newEnv(t, envOptions{maxTTL: 2 * time.Second})
	token, _ := e.serviceAccount("ns", "app", nil)
	closed := make(chan struct{})
	nc, errs, err := e.connect(token, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed by the server when the user JWT expired")
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrAuthExpired) {
			t.Errorf("server said %v, want %v", err, nats.ErrAuthExpired)
		}
	default:
		t.Errorf("closed without an error from the server, want %v", nats.ErrAuthExpired)
	}
}

// TestDecisionLogNamesPod checks that the decision log names the pod a bound token was issued
// for, and has no pod attribute for a token bound to none.
func TestDecisionLogNamesPod(t *testing.T) {
	e := newEnv(t, envOptions{})
	unbound, sa := e.serviceAccount("team-a", "orders", nil)
	claims := e.issuer.Claims(sa.Namespace, sa.Name, string(sa.UID), []string{audience}, time.Hour)
	claims.Kubernetes.Pod = &kube.ObjectRef{Name: "orders-7d9f-x2k4q", UID: "pod-uid-1"}
	claims.Kubernetes.Node = &kube.ObjectRef{Name: "node-1", UID: "node-uid-1"}
	bound, err := e.issuer.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}

	// decisions returns the attributes of the decision lines for team-a/orders, oldest first.
	decisions := func() []map[string]any {
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "callout decision" || m["serviceaccount"] != "orders" {
				continue
			}
			out = append(out, m)
		}
		return out
	}
	for _, c := range []struct {
		name, token string
		wantPod     any // nil: no pod attribute
	}{
		{"pod-bound token", bound, "orders-7d9f-x2k4q"},
		{"token bound to no pod", unbound, nil},
	} {
		before := len(decisions())
		nc, _, err := e.connect(c.token)
		if err != nil {
			t.Fatalf("%s: connect: %v", c.name, err)
		}
		nc.Close()
		got := decisions()
		if len(got) != before+1 {
			t.Fatalf("%s: %d new decision lines, want 1:\n%s", c.name, len(got)-before, lastLines(e.logs.String(), 3))
		}
		d := got[len(got)-1]
		if d["result"] != callout.ResultAllowed || d["namespace"] != "team-a" {
			t.Errorf("%s: decision %v, want team-a/orders allowed", c.name, d)
		}
		if pod, ok := d["pod"]; pod != c.wantPod || (c.wantPod == nil && ok) {
			t.Errorf("%s: pod = %v (present %v), want %v", c.name, pod, ok, c.wantPod)
		}
	}
}

// TestConnectionNamesIdentity checks that nats-server knows a callout user by the identity its
// user JWT names: connz's authorized_user is the ServiceAccount, its uid and the bound pod.
func TestConnectionNamesIdentity(t *testing.T) {
	e := newEnv(t, envOptions{})
	_, sa := e.serviceAccount("team-a", "orders", nil)
	claims := e.issuer.Claims(sa.Namespace, sa.Name, string(sa.UID), []string{audience}, time.Hour)
	claims.Kubernetes.Pod = &kube.ObjectRef{Name: "orders-7d9f-x2k4q", UID: "pod-uid-1"}
	token, err := e.issuer.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	nc, _, err := e.connect(token)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	connz, err := e.server.Connz(&server.ConnzOptions{CID: cid, Username: true})
	if err != nil || len(connz.Conns) != 1 {
		t.Fatalf("connz of cid %d: %v, %+v", cid, err, connz)
	}
	want := "system:serviceaccount:team-a:orders uid=" + string(sa.UID) + " pod=orders-7d9f-x2k4q pod-uid=pod-uid-1"
	if got := connz.Conns[0].AuthorizedUser; got != want {
		t.Errorf("authorized_user = %q, want %q", got, want)
	}
	if id, ok := kube.ParseConnectionName(connz.Conns[0].AuthorizedUser); !ok || id.PodUID != "pod-uid-1" || id.UID != string(sa.UID) {
		t.Errorf("ParseConnectionName(%q) = %+v, %v", connz.Conns[0].AuthorizedUser, id, ok)
	}
}
