package callout_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
)

// FuzzHandle feeds the whole request handler arbitrary request bodies and Nats-Server-Xkey
// headers, with and without an xkey configured, in server-config and operator mode. It must
// never panic, and must answer only with a response the server would take (signed by the
// issuer, for the server that signed the request, sealed when the request was) or not at all.
//
// The rigs' keys and clock are fixed, so the seed corpus and testdata/fuzz/FuzzHandle stay
// valid requests for good. A crash found by `make fuzz` lands in testdata/fuzz/FuzzHandle:
// commit it with the fix, and it runs with every `go test` from then on.
func FuzzHandle(f *testing.F) {
	rigs := map[[2]bool]*rig{}
	for _, encrypted := range []bool{false, true} {
		for _, operator := range []bool{false, true} {
			rigs[[2]bool{encrypted, operator}] = newRig(f, rigOptions{encrypted: encrypted, operator: operator, log: io.Discard})
		}
	}
	for mode, r := range rigs {
		encrypted, operator := mode[0], mode[1]
		data, hdr := r.request(r.claims())
		f.Add(data, hdr.Get("Nats-Server-Xkey"), encrypted, operator)
		denied := r.claims()
		denied.ConnectOptions.Token = "another-token"
		data, hdr = r.request(denied)
		f.Add(data, hdr.Get("Nats-Server-Xkey"), encrypted, operator)
	}
	f.Add(append([]byte("xkv1"), make([]byte, 64)...), strings.Repeat("A", 58), true, false)
	f.Add([]byte("eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.AAAA"), "", false, false)

	f.Fuzz(func(t *testing.T, body []byte, xkey string, encrypted, operator bool) {
		r := rigs[[2]bool{encrypted, operator}]
		var hdr nats.Header
		if xkey != "" {
			hdr = nats.Header{"Nats-Server-Xkey": []string{xkey}}
		}
		reply, d := r.h.Handle(context.Background(), bytes.Clone(body), hdr)
		if errors.Is(d.Err, callout.ErrPanic) {
			t.Fatalf("handling the request panicked: %v (the stack is in the decision log)", d.Err)
		}
		if (reply == nil) != (d.Result == callout.ResultDropped) {
			t.Fatalf("result %s (%s: %v) with a reply of %d bytes", d.Result, d.Reason, d.Err, len(reply))
		}
		if reply == nil {
			return
		}
		rc, err := r.response(reply)
		if err != nil {
			t.Fatalf("%s (%s): reply the server would not take: %v", d.Result, d.Reason, err)
		}
		if (rc.Jwt != "") != (d.Result == callout.ResultAllowed) {
			t.Fatalf("%s (%s): response with user JWT %v, error %q", d.Result, d.Reason, rc.Jwt != "", rc.Error)
		}
		if rc.Jwt != "" {
			uc, err := natsjwt.DecodeUserClaims(rc.Jwt)
			if err != nil {
				t.Fatalf("user JWT: %v", err)
			}
			if uc.Subject != rc.Subject {
				t.Fatalf("user JWT for %s, want one for the response's user %s", uc.Subject, rc.Subject)
			}
		}
	})
}
