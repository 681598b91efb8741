package callout

import (
	"context"
	"errors"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// This file holds every value of the `result` and `reason` labels of
// nats_callout_requests_total, which the decision log repeats. They are part of the service's
// interface (alerts and dashboards match on them): never change one.

// Results of one callout request, used as the `result` metric label and in the decision log.
const (
	// ResultAllowed means a user JWT was issued.
	ResultAllowed = "allowed"
	// ResultDenied means a signed error response was sent: the client gets "Authorization Violation" at once.
	ResultDenied = "denied"
	// ResultDropped means no response was sent: the request could not be trusted or answered.
	ResultDropped = "dropped"
)

// Reasons a request was allowed, dropped or denied that arise in this package.
const (
	ReasonOK            = "ok"
	ReasonBadRequest    = "bad_request"
	ReasonEncryption    = "encryption_mismatch"
	ReasonUnknownIssuer = "unknown_issuer"
	ReasonDeadline      = "deadline_exceeded"
	ReasonNotReady      = "not_ready"
	ReasonInternal      = "internal_error"
	// ReasonOverloaded is the `reason` of a request dropped on arrival because the queue of
	// requests waiting for a worker was full: its client gets no answer and fails after the
	// server's authorization timeout, as it would have if the service had answered too late.
	ReasonOverloaded = "overloaded"
	// ReasonSourceMismatch is the `reason` of a denial under BIND_SOURCE_IP: the client's
	// address, as the nats-server signed it into the request, is none of its bound pod's IPs.
	ReasonSourceMismatch = "source_ip_mismatch"
	// reasonUnclassified is a denial whose error wraps none of kube's sentinels.
	reasonUnclassified = "unauthorized"
)

// Reasons a token or its ServiceAccount is refused, one per client-facing sentinel error of
// package kube (see Reason).
const (
	ReasonNoToken                = "no_token"
	ReasonMalformedToken         = "malformed_token"
	ReasonBadSignature           = "bad_signature"
	ReasonExpired                = "expired"
	ReasonNotYetValid            = "not_yet_valid"
	ReasonWrongIssuer            = "wrong_issuer"
	ReasonWrongAudience          = "wrong_audience"
	ReasonBadClaims              = "bad_claims"
	ReasonServiceAccountNotFound = "serviceaccount_not_found"
	ReasonServiceAccountDeleting = "serviceaccount_deleting"
	ReasonUIDMismatch            = "serviceaccount_uid_mismatch"
	ReasonInvalidPolicy          = "invalid_policy"
	// ReasonAccountNotAllowed: the namespace's nats.io/account label names an account outside
	// NATS_ALLOWED_ACCOUNTS, or the callout or system account.
	ReasonAccountNotAllowed = "account_not_allowed"
	// Bound objects (VERIFY_BOUND_OBJECTS) and source pinning (BIND_SOURCE_IP).
	ReasonPodNotFound          = "pod_not_found"
	ReasonPodUIDMismatch       = "pod_uid_mismatch"
	ReasonSecretNotFound       = "secret_not_found"
	ReasonSecretUIDMismatch    = "secret_uid_mismatch"
	ReasonNodeNotFound         = "node_not_found"
	ReasonNodeUIDMismatch      = "node_uid_mismatch"
	ReasonBoundObjectUnchecked = "bound_object_unverifiable"
	ReasonPodNoIP              = "pod_no_ip"
)

// ReasonAccountKeyMissing is the `reason` of a denial in operator mode when the service holds
// no signing key for the account the namespace is placed in (see /readyz).
const ReasonAccountKeyMissing = "account_key_missing"

// kubeReasons maps each of kube's client-facing sentinels to its label, in the order Reason
// tests them. kube.ErrNotSynced is not among them: it is the service's state, not the
// client's fault (the request is dropped as ReasonNotReady).
var kubeReasons = []struct {
	err    error
	reason string
}{
	{kube.ErrNoToken, ReasonNoToken},
	{kube.ErrMalformedToken, ReasonMalformedToken},
	{kube.ErrBadSignature, ReasonBadSignature},
	{kube.ErrExpired, ReasonExpired},
	{kube.ErrNotYetValid, ReasonNotYetValid},
	{kube.ErrWrongIssuer, ReasonWrongIssuer},
	{kube.ErrWrongAudience, ReasonWrongAudience},
	{kube.ErrBadClaims, ReasonBadClaims},
	{kube.ErrServiceAccountNotFound, ReasonServiceAccountNotFound},
	{kube.ErrServiceAccountDeleting, ReasonServiceAccountDeleting},
	{kube.ErrUIDMismatch, ReasonUIDMismatch},
	{kube.ErrInvalidPolicy, ReasonInvalidPolicy},
	{kube.ErrAccountNotAllowed, ReasonAccountNotAllowed},
	{kube.ErrPodNotFound, ReasonPodNotFound},
	{kube.ErrPodUIDMismatch, ReasonPodUIDMismatch},
	{kube.ErrSecretNotFound, ReasonSecretNotFound},
	{kube.ErrSecretUIDMismatch, ReasonSecretUIDMismatch},
	{kube.ErrNodeNotFound, ReasonNodeNotFound},
	{kube.ErrNodeUIDMismatch, ReasonNodeUIDMismatch},
	{kube.ErrBoundObjectUnverifiable, ReasonBoundObjectUnchecked},
	{kube.ErrPodNoIP, ReasonPodNoIP},
}

// Reason returns the label of the kube sentinel error err wraps (a token or ServiceAccount
// refusal, e.g. "serviceaccount_not_found"), or "" when it wraps none of them (including
// kube.ErrNotSynced and context errors).
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range kubeReasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return ""
}

// reasonOf labels a refusal by the verifier or the store: its kube reason, ReasonDeadline when
// the request's time ran out, else reasonUnclassified.
func reasonOf(err error) string {
	if r := Reason(err); r != "" {
		return r
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return ReasonDeadline
	}
	return reasonUnclassified
}
