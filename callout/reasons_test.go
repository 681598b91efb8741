package callout

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// TestReason pins the label of every kube refusal: they are metric label values that alerts
// match on.
func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("other"), ""},
		{kube.ErrNotSynced, ""},
		{context.Canceled, ""},
		{kube.ErrNoToken, "no_token"},
		{fmt.Errorf("wrapped: %w", kube.ErrMalformedToken), "malformed_token"},
		{fmt.Errorf("x: %w", kube.ErrBadSignature), "bad_signature"},
		{kube.ErrExpired, "expired"},
		{kube.ErrNotYetValid, "not_yet_valid"},
		{kube.ErrWrongIssuer, "wrong_issuer"},
		{kube.ErrWrongAudience, "wrong_audience"},
		{kube.ErrBadClaims, "bad_claims"},
		{kube.ErrServiceAccountNotFound, "serviceaccount_not_found"},
		{kube.ErrServiceAccountDeleting, "serviceaccount_deleting"},
		{kube.ErrUIDMismatch, "serviceaccount_uid_mismatch"},
		{fmt.Errorf("%w: x", kube.ErrInvalidPolicy), "invalid_policy"},
		{fmt.Errorf("%w: x", kube.ErrPodNotFound), "pod_not_found"},
		{kube.ErrPodUIDMismatch, "pod_uid_mismatch"},
		{kube.ErrSecretNotFound, "secret_not_found"},
		{kube.ErrSecretUIDMismatch, "secret_uid_mismatch"},
		{kube.ErrNodeNotFound, "node_not_found"},
		{kube.ErrNodeUIDMismatch, "node_uid_mismatch"},
		{kube.ErrBoundObjectUnverifiable, "bound_object_unverifiable"},
		{kube.ErrPodNoIP, "pod_no_ip"},
		{fmt.Errorf("%w: x", kube.ErrPodsNotSynced), ""},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestReasonOf(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("lookup: %w", kube.ErrUIDMismatch), "serviceaccount_uid_mismatch"},
		{context.DeadlineExceeded, "deadline_exceeded"},
		{fmt.Errorf("fetch: %w", context.Canceled), "deadline_exceeded"},
		{errors.New("something else"), "unauthorized"},
	}
	for _, tt := range tests {
		if got := reasonOf(tt.err); got != tt.want {
			t.Errorf("reasonOf(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestReasonsAreDistinct checks that no two reasons collide, so a label names one cause.
func TestReasonsAreDistinct(t *testing.T) {
	reasons := []string{
		ReasonOK, ReasonBadRequest, ReasonEncryption, ReasonUnknownIssuer, ReasonDeadline,
		ReasonNotReady, ReasonInternal, ReasonOverloaded, ReasonSourceMismatch, reasonUnclassified,
	}
	for _, r := range kubeReasons {
		reasons = append(reasons, r.reason)
	}
	seen := map[string]bool{}
	for _, r := range reasons {
		if r == "" || seen[r] {
			t.Errorf("reason %q is empty or used twice", r)
		}
		seen[r] = true
	}
}
