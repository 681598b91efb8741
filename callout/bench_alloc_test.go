package callout_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// BenchmarkHandleCache measures BenchmarkHandle's plain decision with the verified-token cache
// (on by default) and without it: warm is a client reconnecting with a token that verified
// before (no signature check), cold one whose token is verified against the JWKS (a first
// login, or TOKEN_CACHE_SIZE=0).
func BenchmarkHandleCache(b *testing.B) {
	for _, c := range []struct {
		name string
		size int
	}{{"warm", 0}, {"cold", -1}} {
		b.Run(c.name, func(b *testing.B) {
			w := newWorld(b)
			jwks := httptest.NewServer(w.issuer.JWKSHandler())
			b.Cleanup(jwks.Close)
			ctx, cancel := context.WithCancel(context.Background())
			verifier, err := kube.NewVerifier(ctx, kube.VerifierConfig{
				JWKSURL: jwks.URL, Issuer: testIssuer, Audience: audience, TokenCacheSize: c.size,
			})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cancel(); <-verifier.Done() })
			k := newKeys(b, false)
			token := w.token("shop", "api")
			h, err := callout.NewHandler(callout.HandlerConfig{
				Verifier: verifier, Policies: w.store, SigningKeys: fixedRing(b, k.issuer), Account: "APP",
				Logger:  slog.New(slog.NewJSONHandler(io.Discard, nil)),
				Metrics: callout.NewMetrics(prometheus.NewRegistry()),
			})
			if err != nil {
				b.Fatal(err)
			}
			data, hdr := serverRequest(b, k, token)
			// The first decision loads the JWKS (an unknown kid refreshes it) and, warm, caches the token.
			if _, d := h.Handle(context.Background(), data, hdr); d.Result != callout.ResultAllowed {
				b.Fatalf("got %s (%s: %v), want allowed", d.Result, d.Reason, d.Err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if reply, d := h.Handle(context.Background(), data, hdr); d.Result != callout.ResultAllowed || reply == nil {
					b.Fatalf("got %s (%s: %v), want allowed", d.Result, d.Reason, d.Err)
				}
			}
		})
	}
}
