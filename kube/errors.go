package kube

import "errors"

// Reasons a connection is refused. Every error returned by Verify, Policy and ParsePolicy
// wraps exactly one of them (or is a context error); test with errors.Is. Package callout
// turns them into metric labels (callout.Reason).
var (
	// ErrNoToken means the client sent no token at all.
	ErrNoToken = errors.New("no token")
	// ErrMalformedToken means the token is not a well-formed JWT (wrong number of segments,
	// bad base64 or JSON, absurdly long).
	ErrMalformedToken = errors.New("malformed token")
	// ErrBadSignature means the signature does not check out against the JWKS: unknown key
	// id, a signature that does not match, or an algorithm that is not accepted (none, HS*).
	ErrBadSignature = errors.New("bad token signature")
	// ErrExpired means the token's exp has passed (beyond the leeway).
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid means the token's nbf or iat lies in the future (beyond the leeway).
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrWrongIssuer means iss is missing or not the configured issuer.
	ErrWrongIssuer = errors.New("wrong token issuer")
	// ErrWrongAudience means aud does not contain the configured audience.
	ErrWrongAudience = errors.New("wrong token audience")
	// ErrBadClaims means the token is signed and current but is not a usable ServiceAccount
	// token: no exp, no kubernetes.io claim or missing namespace/name/uid in it, or a sub that
	// disagrees with it.
	ErrBadClaims = errors.New("bad serviceaccount token claims")
	// ErrServiceAccountNotFound means the token's ServiceAccount is not in the cache (deleted,
	// or in a namespace the service does not watch).
	ErrServiceAccountNotFound = errors.New("serviceaccount not found")
	// ErrServiceAccountDeleting means the ServiceAccount is being deleted (deletionTimestamp set).
	ErrServiceAccountDeleting = errors.New("serviceaccount is being deleted")
	// ErrUIDMismatch means a ServiceAccount of that name exists but is not the one the token
	// was issued for: it was deleted and recreated, so the old token must not be honoured.
	ErrUIDMismatch = errors.New("serviceaccount uid does not match the token")
	// ErrInvalidPolicy means the ServiceAccount's permission annotations cannot be applied
	// safely (an invalid deny entry): the connection is refused rather than widened.
	ErrInvalidPolicy = errors.New("invalid serviceaccount policy")
	// ErrNotSynced means the ServiceAccount was not found while the informer cache has not
	// finished its initial list, so the answer is not known yet. It has no refusal label
	// (callout.Reason returns ""): it is the service's state, not the client's fault.
	ErrNotSynced = errors.New("serviceaccount cache not synced")
	// ErrAccountNotAllowed means the namespace's nats.io/account label names an account the
	// service may not place users in: not in the allow-list, or the callout or system account.
	ErrAccountNotAllowed = errors.New("namespace label names an account that is not allowed")

	// ErrPodNotFound means the token is bound to a pod that no longer exists (or whose
	// deletion grace period has passed). Kubernetes' own TokenReview refuses such a token too.
	ErrPodNotFound = errors.New("bound pod not found")
	// ErrPodUIDMismatch means a pod of the token's pod name exists but is another one: the pod
	// the token was issued for was deleted and one of the same name created.
	ErrPodUIDMismatch = errors.New("bound pod uid does not match the token")
	// ErrSecretNotFound means the token is bound to a Secret that no longer exists.
	ErrSecretNotFound = errors.New("bound secret not found")
	// ErrSecretUIDMismatch means the token's Secret was deleted and recreated.
	ErrSecretUIDMismatch = errors.New("bound secret uid does not match the token")
	// ErrNodeNotFound means the token is bound to a node that no longer exists.
	ErrNodeNotFound = errors.New("bound node not found")
	// ErrNodeUIDMismatch means the token's node was deleted and one of the same name created.
	ErrNodeUIDMismatch = errors.New("bound node uid does not match the token")
	// ErrBoundObjectUnverifiable means the object a token is bound to could not be looked up
	// (the API server refused or failed the request, typically RBAC without get on secrets):
	// the token is refused rather than trusted unchecked.
	ErrBoundObjectUnverifiable = errors.New("bound object could not be looked up")
	// ErrPodNoIP means source pinning (BIND_SOURCE_IP) is on and the token names no pod, or
	// its pod has no IP yet: there is no address to pin the user to.
	ErrPodNoIP = errors.New("no bound pod ip to pin the connection to")
	// ErrPodsNotSynced means the token's pod was not found while the pod cache has not finished
	// its initial list. It wraps ErrNotSynced: the request is dropped, not refused.
	ErrPodsNotSynced error = podsNotSynced{}
)

// podsNotSynced is ErrPodsNotSynced: its own message, and errors.Is(err, ErrNotSynced) holds.
type podsNotSynced struct{}

func (podsNotSynced) Error() string { return "pod cache not synced" }

// Is makes ErrPodsNotSynced match ErrNotSynced.
func (podsNotSynced) Is(target error) bool { return target == ErrNotSynced }
