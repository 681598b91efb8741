package callout_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
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
				if xk, err = callout.ParseXKey(testsupport.Seed(b, k.xkey)); err != nil {
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
	rc := natsjwt.NewAuthorizationRequestClaims(testsupport.PublicKey(b, k.issuer))
	rc.Audience = "nats-authorization-request"
	rc.UserNkey = testsupport.PublicKey(b, userKP)
	rc.Server = natsjwt.ServerID{Name: "nats-0", ID: testsupport.PublicKey(b, serverKP)}
	rc.ConnectOptions.Token = token
	rc.ClientInformation.Host = "10.0.0.7"
	rc.Expires = time.Now().Add(time.Hour).Unix()
	var serverX nkeys.KeyPair
	if k.xkey != nil {
		if serverX, err = nkeys.CreateCurveKeys(); err != nil {
			b.Fatal(err)
		}
		rc.Server.XKey = testsupport.PublicKey(b, serverX)
	}
	tok, err := rc.Encode(serverKP)
	if err != nil {
		b.Fatal(err)
	}
	if k.xkey == nil {
		return []byte(tok), nats.Header{}
	}
	sealed, err := serverX.Seal([]byte(tok), testsupport.PublicKey(b, k.xkey))
	if err != nil {
		b.Fatal(err)
	}
	return sealed, nats.Header{"Nats-Server-Xkey": []string{testsupport.PublicKey(b, serverX)}}
}

// annotationBytes is Kubernetes' limit on the annotations of one object, keys and values
// together (256 KiB).
const annotationBytes = 256 << 10

// Annotation sets for BenchmarkHandleAnnotations, keyed by name.
var benchAnnotations = map[string]func() map[string]string{
	// A ServiceAccount as they are written: a few subjects of each kind.
	"normal": func() map[string]string {
		return map[string]string{
			kube.AnnotationAllowedPub: "orders.created, orders.updated, metrics.*.cpu, shop.requests.>",
			kube.AnnotationAllowedSub: "events.>, shop.replies.*",
			kube.AnnotationDeniedPub:  "shop.admin.>",
		}
	},
	// The attack of the hardening issue: one allow annotation of short subjects filling the
	// whole 256 KiB (about 40,000 entries).
	"one-huge-allow": func() map[string]string {
		var b strings.Builder
		for i := 0; b.Len() < annotationBytes-64; i++ {
			fmt.Fprintf(&b, "s.%d,", i)
		}
		return map[string]string{kube.AnnotationAllowedPub: b.String()}
	},
	// All four lists at the entry cap, with subjects long enough to fill the 256 KiB between
	// them: the most a login carried before ANNOTATION_MAX_BYTES. Its deny lists are beyond that
	// cap, so the login is now refused (invalid_policy).
	"four-full-lists": func() map[string]string {
		return map[string]string{
			kube.AnnotationAllowedPub: longList("pub", kube.DefaultAnnotationMaxEntries), kube.AnnotationAllowedSub: longList("sub", kube.DefaultAnnotationMaxEntries),
			kube.AnnotationDeniedPub: longList("nopub", kube.DefaultAnnotationMaxEntries), kube.AnnotationDeniedSub: longList("nosub", kube.DefaultAnnotationMaxEntries),
		}
	},
	// The most an allowed login can be made to carry now: all four lists at the entry cap, the
	// deny lists just inside the byte cap (1,000 subjects of 8 bytes each), the allow lists of long
	// subjects filling what the byte cap leaves and far beyond it.
	"at-the-caps": func() map[string]string {
		deny := func(prefix string) string {
			e := make([]string, kube.DefaultAnnotationMaxEntries)
			for i := range e {
				e[i] = fmt.Sprintf("%s.%05d", prefix, i)
			}
			return strings.Join(e, ",")
		}
		return map[string]string{
			kube.AnnotationAllowedPub: longList("pub", kube.DefaultAnnotationMaxEntries), kube.AnnotationAllowedSub: longList("sub", kube.DefaultAnnotationMaxEntries),
			kube.AnnotationDeniedPub: deny("np"), kube.AnnotationDeniedSub: deny("ns"),
		}
	},
	// The most the allow lists alone can grant: both at the entry cap with long subjects, cut at
	// the byte cap.
	"allow-at-the-cap": func() map[string]string {
		return map[string]string{
			kube.AnnotationAllowedPub: longList("pub", kube.DefaultAnnotationMaxEntries), kube.AnnotationAllowedSub: longList("sub", kube.DefaultAnnotationMaxEntries),
		}
	},
}

// longList is n distinct subjects of about 56 bytes, comma-separated.
func longList(prefix string, n int) string {
	e := make([]string, n)
	for i := range e {
		e[i] = fmt.Sprintf("shop.%s.%s.%05d", prefix, strings.Repeat("x", 40), i)
	}
	return strings.Join(e, ",")
}

// BenchmarkHandleAnnotations measures a whole login (BenchmarkHandle's path) of a ServiceAccount
// with a normal set of annotations and with annotations at Kubernetes' 256 KiB limit and at
// the caps (ANNOTATION_MAX_ENTRIES, ANNOTATION_MAX_BYTES at their defaults), shaped for the most
// work: the cost of the worst login one tenant can cause. subject-bytes is the bytes of the
// subjects in the user JWT's permissions (defaults and annotations).
func BenchmarkHandleAnnotations(b *testing.B) {
	for _, c := range []struct{ name, want string }{
		{"normal", callout.ResultAllowed},
		{"one-huge-allow", callout.ResultAllowed},
		{"allow-at-the-cap", callout.ResultAllowed},
		{"at-the-caps", callout.ResultAllowed},
		{"four-full-lists", callout.ResultDenied},
	} {
		name := c.name
		b.Run(name, func(b *testing.B) {
			annotations := benchAnnotations[name]()
			size := 0
			for k, v := range annotations {
				size += len(k) + len(v)
			}
			if size > annotationBytes {
				b.Fatalf("%d bytes of annotations, Kubernetes allows %d", size, annotationBytes)
			}
			w := newWorld(b)
			k := newKeys(b, false)
			token := annotatedToken(b, w, "shop", "api", annotations, c.want == callout.ResultAllowed)
			h, err := callout.NewHandler(callout.HandlerConfig{
				Verifier: w.verifier, Policies: w.store, SigningKeys: fixedRing(b, k.issuer), Account: "APP",
				Logger:  slog.New(slog.NewJSONHandler(io.Discard, nil)),
				Metrics: callout.NewMetrics(prometheus.NewRegistry()),
			})
			if err != nil {
				b.Fatal(err)
			}
			data, hdr := serverRequest(b, k, token)
			var reply []byte
			b.ReportAllocs()
			for b.Loop() {
				var d callout.Decision
				if reply, d = h.Handle(context.Background(), data, hdr); d.Result != c.want || reply == nil {
					b.Fatalf("got %s (%s: %v), want %s", d.Result, d.Reason, d.Err, c.want)
				}
			}
			granted := 0
			if pol, err := w.store.Policy(kube.Identity{Namespace: "shop", Name: "api", UID: "uid-shop-api"}); err == nil {
				p := pol.Permissions
				for _, l := range [][]string{p.PubAllow, p.PubDeny, p.SubAllow, p.SubDeny} {
					for _, s := range l {
						granted += len(s)
					}
				}
			}
			b.ReportMetric(float64(size), "annotation-bytes")
			b.ReportMetric(float64(granted), "subject-bytes")
			b.ReportMetric(float64(len(reply)), "reply-bytes")
		})
	}
}

// BenchmarkPermissionLists compares building a user JWT's permission list of 60,000 entries
// with jwt.StringList.Add, which checks each entry against the whole list (quadratic), and
// with the handler's map-based dedupe.
func BenchmarkPermissionLists(b *testing.B) {
	subjects := make([]string, 60000)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("s.%d", i)
	}
	b.Run("StringList.Add", func(b *testing.B) {
		for b.Loop() {
			var l natsjwt.StringList
			l.Add(subjects...)
		}
	})
	b.Run("handler", func(b *testing.B) {
		for b.Loop() {
			if callout.SubjectList(subjects) == nil {
				b.Fatal("empty list")
			}
		}
	})
}

// annotatedToken creates ServiceAccount ns/name with annotations and returns a token for it
// once the informer has it (and, if valid, once its policy parses).
func annotatedToken(b *testing.B, w *world, ns, name string, annotations map[string]string, valid bool) string {
	b.Helper()
	sa := &kube.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Annotations: annotations}}
	created, err := w.kube.Create(context.Background(), sa)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := w.issuer.ServiceAccountToken(ns, name, string(created.UID), []string{audience}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	testsupport.WaitFor(b, "ServiceAccount in cache", 10*time.Second, func() bool {
		_, err := w.store.Policy(kube.Identity{Namespace: ns, Name: name, UID: string(created.UID), Expiry: time.Now().Add(time.Hour)})
		return err == nil || !valid && errors.Is(err, kube.ErrInvalidPolicy)
	})
	return tok
}
