package callout_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
)

// BenchmarkHandle measures the decision path: a request JWT as nats-server sends it in, a
// signed (and, encrypted, sealed) response out, with a real kube.Verifier (RS256 token, JWKS
// served over HTTP) and a real kube.Store informer cache, logging each decision as JSON.
func BenchmarkHandle(b *testing.B) {
	for _, c := range []struct {
		name      string
		encrypted bool
		parallel  bool
	}{
		{"plain", false, false},
		{"encrypted", true, false},
		{"plain/parallel", false, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			w := newWorld(b)
			k := newKeys(b, c.encrypted)
			token := w.token("shop", "api")
			var xk *callout.XKey
			if c.encrypted {
				var err error
				if xk, err = callout.ParseXKey(seed(b, k.xkey)); err != nil {
					b.Fatal(err)
				}
			}
			h, err := callout.NewHandler(callout.HandlerConfig{
				Verifier: w.verifier, Policies: w.store, SigningKeys: fixedRing(b, k.issuer),
				XKey: func() *callout.XKey { return xk }, Account: "APP",
				Logger:  slog.New(slog.NewJSONHandler(io.Discard, nil)),
				Metrics: callout.NewMetrics(prometheus.NewRegistry()),
			})
			if err != nil {
				b.Fatal(err)
			}
			data, hdr := serverRequest(b, k, token)
			handle := func() {
				reply, d := h.Handle(context.Background(), data, hdr)
				if d.Result != callout.ResultAllowed || reply == nil {
					b.Fatalf("got %s (%s: %v), want allowed", d.Result, d.Reason, d.Err)
				}
			}
			b.ReportAllocs()
			if c.parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						handle()
					}
				})
				return
			}
			for b.Loop() {
				handle()
			}
		})
	}
}

// serverRequest builds a callout request the way nats-server does: signed by the server's
// nkey, naming the issuer it expects, sealed to the service's xkey when k has one.
func serverRequest(b *testing.B, k keys, token string) ([]byte, nats.Header) {
	b.Helper()
	serverKP, err := nkeys.CreateServer()
	if err != nil {
		b.Fatal(err)
	}
	userKP := newUser(b)
	rc := natsjwt.NewAuthorizationRequestClaims(pub(b, k.issuer))
	rc.Audience = "nats-authorization-request"
	rc.UserNkey = pub(b, userKP)
	rc.Server = natsjwt.ServerID{Name: "nats-0", ID: pub(b, serverKP)}
	rc.ConnectOptions.Token = token
	rc.ClientInformation.Host = "10.0.0.7"
	rc.Expires = time.Now().Add(time.Hour).Unix()
	var serverX nkeys.KeyPair
	if k.xkey != nil {
		if serverX, err = nkeys.CreateCurveKeys(); err != nil {
			b.Fatal(err)
		}
		rc.Server.XKey = pub(b, serverX)
	}
	tok, err := rc.Encode(serverKP)
	if err != nil {
		b.Fatal(err)
	}
	if k.xkey == nil {
		return []byte(tok), nats.Header{}
	}
	sealed, err := serverX.Seal([]byte(tok), pub(b, k.xkey))
	if err != nil {
		b.Fatal(err)
	}
	return sealed, nats.Header{"Nats-Server-Xkey": []string{pub(b, serverX)}}
}
