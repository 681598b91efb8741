package callout_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	natsjwt "github.com/nats-io/jwt/v2"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

type funcBound func(ctx context.Context, id kube.Identity) error

func (f funcBound) CheckBound(ctx context.Context, id kube.Identity) error { return f(ctx, id) }

type funcSources func(ctx context.Context, id kube.Identity) ([]string, error)

func (f funcSources) SourceAddresses(ctx context.Context, id kube.Identity) ([]string, error) {
	return f(ctx, id)
}

// podBound is the identity of a token bound to pod web-0 of ns/app.
var podBound = kube.Identity{Namespace: "ns", Name: "app", UID: "uid-1", Expiry: rigNow.Add(time.Hour), PodName: "web-0", PodUID: "pod-uid-1"}

// grantUser answers one request of rig r and returns the user JWT it granted, decoded.
func grantUser(t *testing.T, r *rig) (*natsjwt.UserClaims, callout.Decision) {
	t.Helper()
	reply, d := r.handle()
	if d.Result != callout.ResultAllowed {
		t.Fatalf("decision %s/%s (%v), want allowed", d.Result, d.Reason, d.Err)
	}
	rc, err := r.response(reply)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := natsjwt.DecodeUserClaims(rc.Jwt)
	if err != nil {
		t.Fatalf("user JWT: %v", err)
	}
	return uc, d
}

// handle answers one request of r for a client with the rig's token.
func (r *rig) handle() ([]byte, callout.Decision) {
	data, hdr := r.request(r.claims())
	return r.h.Handle(context.Background(), data, hdr)
}

// TestUserJWTIdentity decodes granted user JWTs: the name is the ServiceAccount's Kubernetes
// user name (nats-server shows it as the connection's user), and the tags name namespace,
// ServiceAccount, its uid and, for a pod-bound token, the pod and its uid.
func TestUserJWTIdentity(t *testing.T) {
	unbound := podBound
	unbound.PodName, unbound.PodUID = "", ""
	for _, tt := range []struct {
		name     string
		id       kube.Identity
		want     []string
		wantName string
	}{
		{"pod-bound token", podBound, []string{"namespace:ns", "serviceaccount:app", "sa-uid:uid-1", "pod:web-0", "pod-uid:pod-uid-1"},
			"system:serviceaccount:ns:app uid=uid-1 pod=web-0 pod-uid=pod-uid-1"},
		{"token bound to no pod", unbound, []string{"namespace:ns", "serviceaccount:app", "sa-uid:uid-1"}, "system:serviceaccount:ns:app uid=uid-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigOptions{verify: func(context.Context, string) (kube.Identity, error) { return tt.id, nil }})
			uc, _ := grantUser(t, r)
			if uc.Name != tt.wantName {
				t.Errorf("name = %q, want %q", uc.Name, tt.wantName)
			}
			got := slices.Sorted(slices.Values(uc.Tags))
			if want := slices.Sorted(slices.Values(tt.want)); !slices.Equal(got, want) {
				t.Errorf("tags = %v, want %v", got, want)
			}
			if len(uc.Src) != 0 {
				t.Errorf("source addresses %v without source pinning", uc.Src)
			}
		})
	}
}

// TestBoundObjectRefusals checks that each refusal of the bound-object check is a signed
// denial with its reason, and that a pod cache still syncing drops the request instead.
func TestBoundObjectRefusals(t *testing.T) {
	for _, tt := range []struct {
		err          error
		result, want string
	}{
		{kube.ErrPodNotFound, callout.ResultDenied, "pod_not_found"},
		{kube.ErrPodUIDMismatch, callout.ResultDenied, "pod_uid_mismatch"},
		{kube.ErrSecretNotFound, callout.ResultDenied, "secret_not_found"},
		{kube.ErrSecretUIDMismatch, callout.ResultDenied, "secret_uid_mismatch"},
		{kube.ErrNodeNotFound, callout.ResultDenied, "node_not_found"},
		{kube.ErrNodeUIDMismatch, callout.ResultDenied, "node_uid_mismatch"},
		{kube.ErrBoundObjectUnverifiable, callout.ResultDenied, "bound_object_unverifiable"},
		{kube.ErrPodsNotSynced, callout.ResultDropped, callout.ReasonNotReady},
		{nil, callout.ResultAllowed, callout.ReasonOK},
	} {
		t.Run(tt.want, func(t *testing.T) {
			var checked kube.Identity
			r := newRig(t, rigOptions{
				verify: func(context.Context, string) (kube.Identity, error) { return podBound, nil },
				bound: funcBound(func(_ context.Context, id kube.Identity) error {
					checked = id
					if tt.err == nil {
						return nil
					}
					return fmt.Errorf("%w: ns/web-0", tt.err)
				}),
			})
			reply, d := r.handle()
			if d.Result != tt.result || d.Reason != tt.want {
				t.Errorf("decision %s/%s, want %s/%s", d.Result, d.Reason, tt.result, tt.want)
			}
			if checked != podBound {
				t.Errorf("checked %+v, want the token's identity %+v", checked, podBound)
			}
			if (reply == nil) != (tt.result == callout.ResultDropped) {
				t.Errorf("reply %v for a %s request", reply != nil, tt.result)
			}
			if tt.result == callout.ResultDenied {
				rc, err := r.response(reply)
				if err != nil || rc.Error != tt.want {
					t.Errorf("response error %q (%v), want %q", rc.Error, err, tt.want)
				}
			}
		})
	}
}

// TestSourcePinning checks that with source pinning the user JWT allows only the pod's
// addresses, that a client from another address is denied (nats-server does not check a
// callout user's sources itself), and that no address means a denial, never an unpinned user.
// The rig's client connects from 10.0.0.7.
func TestSourcePinning(t *testing.T) {
	pinned := func(src []string, err error) *rig {
		return newRig(t, rigOptions{
			verify:  func(context.Context, string) (kube.Identity, error) { return podBound, nil },
			sources: funcSources(func(context.Context, kube.Identity) ([]string, error) { return src, err }),
		})
	}
	uc, _ := grantUser(t, pinned([]string{"10.0.0.7/32", "fd00::7/128"}, nil))
	if want := []string{"10.0.0.7/32", "fd00::7/128"}; !slices.Equal(uc.Src, want) {
		t.Errorf("user JWT sources %v, want %v", uc.Src, want)
	}
	for _, tt := range []struct {
		name, want string
		src        []string
		err        error
	}{
		{"client elsewhere", "source_ip_mismatch", []string{"10.9.9.9/32", "fd00::7/128"}, nil},
		{"no address", "pod_no_ip", nil, nil},
		{"pod without an IP", "pod_no_ip", nil, fmt.Errorf("%w: pending", kube.ErrPodNoIP)},
		{"pod gone", "pod_not_found", nil, kube.ErrPodNotFound},
	} {
		r := pinned(tt.src, tt.err)
		reply, d := r.handle()
		if d.Result != callout.ResultDenied || d.Reason != tt.want || reply == nil {
			t.Errorf("%s: decision %s/%s, want denied/%s", tt.name, d.Result, d.Reason, tt.want)
		}
	}
}
