package kube

// Revocation says that the live connections of one identity may no longer hold the grant they
// logged in with: the Kubernetes object it rested on is gone, was recreated, or now grants less.
// The store, and the other caches that see such changes, report them through a RevocationSink;
// whoever closes connections matches them by the tag Revocation.Tag gives against the tags
// Identity.Tags put on every user JWT.
type Revocation struct {
	// Reason is one of the Revoke* reasons.
	Reason string
	// Namespace and Name name the ServiceAccount (Name is empty for a namespace-wide change).
	Namespace, Name string
	// UID is the uid of the ServiceAccount whose connections are concerned, when the change is
	// about one ServiceAccount.
	UID string
	// PodUID, when set, narrows the change to connections whose token was bound to this pod.
	PodUID string
}

// Revocation reasons: the reason label of nats_callout_revocations_total and the decision log.
const (
	RevokeServiceAccountDeleted   = "serviceaccount_deleted"
	RevokeServiceAccountRecreated = "serviceaccount_recreated"
	RevokeGrantNarrowed           = "grant_narrowed"
	RevokePodDeleted              = "pod_deleted"
	RevokePodRecreated            = "pod_recreated"
	RevokeAccountMoved            = "account_moved"
)

// RevocationSink receives revocations. It is called from informer event handlers: it must not
// block.
type RevocationSink func(Revocation)

// Tag prefixes of the identity tags a user JWT carries (see Identity.Tags). nats-server shows
// them per connection (connz with auth, `nats server report connections`).
const (
	TagNamespace         = "namespace:"
	TagServiceAccount    = "serviceaccount:"
	TagServiceAccountUID = "sa-uid:"
	TagPod               = "pod:"
	TagPodUID            = "pod-uid:"
)

// Tags are the user JWT tags naming the identity: namespace, ServiceAccount name and uid, and
// the bound pod's name and uid when the token is bound to one. Kubernetes names and uids are
// lower case, as nats-server keeps tags.
func (i Identity) Tags() []string {
	tags := []string{TagNamespace + i.Namespace, TagServiceAccount + i.Name}
	if i.UID != "" {
		tags = append(tags, TagServiceAccountUID+i.UID)
	}
	if i.PodName != "" {
		tags = append(tags, TagPod+i.PodName)
	}
	if i.PodUID != "" {
		tags = append(tags, TagPodUID+i.PodUID)
	}
	return tags
}

// Tag is the user JWT tag that marks the connections r concerns: the pod's uid when it names a
// pod, else the ServiceAccount's uid, else (a namespace-wide change) the namespace.
func (r Revocation) Tag() string {
	switch {
	case r.PodUID != "":
		return TagPodUID + r.PodUID
	case r.UID != "":
		return TagServiceAccountUID + r.UID
	default:
		return TagNamespace + r.Namespace
	}
}
