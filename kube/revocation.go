package kube

import (
	"strings"
)

// Revocation says that the live connections of one identity may no longer hold the grant they
// logged in with: the Kubernetes object it rested on is gone, was recreated, or now grants less.
// The store, and the other caches that see such changes, report them through a RevocationSink;
// whoever closes connections finds them by their user name (Identity.ConnectionName, read back
// with ParseConnectionName) and Revocation.Matches.
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
	// Account, when set, is where the namespace's connections belong now (RevokeAccountMoved):
	// connections already in it, logged in since the change, are left alone.
	Account string
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

// Tag prefixes of the identity tags a user JWT carries (see Identity.Tags), for whoever reads
// the JWT. (nats-server keeps no tags of callout users: the connection is known by its name.)
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

// ConnectionName is the user JWT's name for the identity: the ServiceAccount's Kubernetes user
// name, then its uid and the bound pod's name and uid as key=value words, e.g.
// "system:serviceaccount:shop:api uid=0c6d… pod=api-7f9c pod-uid=3b1e…". nats-server makes it
// the connection's user (authorized_user in connz, the user in `nats server report
// connections`), so it says who each connection is, and live revocation finds connections by it.
func (i Identity) ConnectionName() string {
	var b strings.Builder
	b.Grow(len(usernamePrefix) + len(i.Namespace) + len(i.Name) + len(i.UID) + len(i.PodName) + len(i.PodUID) + 24)
	b.WriteString(i.Username())
	for _, kv := range [...][2]string{{"uid", i.UID}, {"pod", i.PodName}, {"pod-uid", i.PodUID}} {
		if kv[1] != "" {
			b.WriteString(" " + kv[0] + "=" + kv[1])
		}
	}
	return b.String()
}

// maxConnectionName bounds what ParseConnectionName reads: a name this service writes is at most
// about 900 bytes (Kubernetes names are at most 253).
const maxConnectionName = 1024

// ParseConnectionName reads a name written by Identity.ConnectionName back. It reports false for
// any other connection name (users that are not ServiceAccounts, or malformed names).
func ParseConnectionName(s string) (Identity, bool) {
	if len(s) > maxConnectionName || !strings.HasPrefix(s, usernamePrefix) {
		return Identity{}, false
	}
	words := strings.Split(s[len(usernamePrefix):], " ")
	ns, name, ok := strings.Cut(words[0], ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return Identity{}, false
	}
	id := Identity{Namespace: ns, Name: name}
	for _, w := range words[1:] {
		k, v, ok := strings.Cut(w, "=")
		if !ok || v == "" {
			return Identity{}, false
		}
		var field *string
		switch k {
		case "uid":
			field = &id.UID
		case "pod":
			field = &id.PodName
		case "pod-uid":
			field = &id.PodUID
		default:
			return Identity{}, false
		}
		if *field != "" {
			return Identity{}, false // repeated key
		}
		*field = v
	}
	return id, true
}

// Matches reports whether the connection of identity c (read back with ParseConnectionName) is
// one r concerns: in r's namespace, and bound to r's pod when r names one, else of r's
// ServiceAccount (by uid; by name for a connection that carries no uid) when r names one, else
// any (a namespace-wide change).
func (r Revocation) Matches(c Identity) bool {
	switch {
	case c.Namespace != r.Namespace:
		return false
	case r.PodUID != "":
		return c.PodUID == r.PodUID
	case r.UID != "" && c.UID != "":
		return c.UID == r.UID
	case r.Name != "":
		return c.Name == r.Name
	default:
		return r.UID == ""
	}
}

// revokeUpdated reports what an update of a ServiceAccount takes from its live connections: a
// new uid (deleted and recreated between two watch events), a deletion under way, or
// annotations that now grant less (see narrowed). An update that only adds takes nothing.
func (s *Store) revokeUpdated(old, cur *cachedObject) {
	if s.onRevocation == nil {
		return
	}
	r := Revocation{Namespace: old.Namespace, Name: old.Name, UID: string(old.UID)}
	switch {
	case old.UID != cur.UID:
		r.Reason = RevokeServiceAccountRecreated
	case old.DeletionTimestamp == nil && cur.DeletionTimestamp != nil:
		r.Reason = RevokeServiceAccountDeleted
	case cur.DeletionTimestamp == nil && !old.sameAnnotations(cur) &&
		s.narrowed(old, cur):
		r.Reason = RevokeGrantNarrowed
	default:
		return
	}
	s.onRevocation(r)
}

// revokeDeleted reports a deleted ServiceAccount.
func (s *Store) revokeDeleted(sa *cachedObject) {
	if s.onRevocation != nil && sa.DeletionTimestamp == nil {
		// (One being deleted was reported when its deletion began.)
		s.onRevocation(Revocation{Reason: RevokeServiceAccountDeleted, Namespace: sa.Namespace, Name: sa.Name, UID: string(sa.UID)})
	}
}

// narrowed reports whether cur's annotations grant less than old's: an allow entry gone, a
// deny entry added, responses no longer allowed, or a policy that now refuses the login. Entries
// are compared as written: rewording a grant (a.b.* in place of a.b.c) counts as narrowing, so
// the connections log in again and get the grant as it now reads. Each side is parsed within
// the annotation bounds, so this costs what a login's policy costs.
func (s *Store) narrowed(old, cur *cachedObject) bool {
	defaults := s.defaults
	if s.accounts != nil {
		if choice, err := s.accounts.Choose(old.Namespace); err == nil {
			defaults = s.defaultsOf(choice.Account)
		}
	}
	was, err := ParsePolicy(defaults, old.Namespace, old.Name, old.annotationMap())
	if err != nil {
		return false // it refused every login: no connection holds a grant from it
	}
	now, err := ParsePolicy(defaults, cur.Namespace, cur.Name, cur.annotationMap())
	if err != nil {
		return true
	}
	a, b := was.Permissions, now.Permissions
	return !subset(a.PubAllow, b.PubAllow) || !subset(a.SubAllow, b.SubAllow) ||
		!subset(b.PubDeny, a.PubDeny) || !subset(b.SubDeny, a.SubDeny) ||
		(a.AllowResponses && !b.AllowResponses)
}

// subset reports whether every entry of a is in b.
func subset(a, b []string) bool {
	if len(a) > len(b) {
		return false
	}
	in := make(map[string]struct{}, len(b))
	for _, x := range b {
		in[x] = struct{}{}
	}
	for _, x := range a {
		if _, ok := in[x]; !ok {
			return false
		}
	}
	return true
}
