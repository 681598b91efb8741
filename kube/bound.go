package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
)

// DefaultBoundLookupTTL is how long a Secret or node lookup, and a pod's addresses, are
// remembered: a reconnect storm of the same workloads costs one API request per object per
// TTL, and a deleted object is refused at most this late.
const DefaultBoundLookupTTL = 10 * time.Second

// maxBoundLookups bounds the lookups remembered; past it the oldest half is forgotten.
const maxBoundLookups = 10000

var (
	secretsResource = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	nodesResource   = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
)

// BoundConfig configures BoundObjects.
type BoundConfig struct {
	// Pods is the pod cache that checks pod-bound tokens (required).
	Pods *PodCache
	// Client looks up the metadata of the Secrets and nodes tokens are bound to (required).
	Client metadata.Interface
	// PodStatus reads a pod's addresses for source pinning; nil turns SourceAddresses off
	// (it refuses every token).
	PodStatus PodStatusGetter
	// TTL is how long lookups are remembered; zero means DefaultBoundLookupTTL.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// BoundObjects checks that the object a token is bound to (a pod, a Secret or a node) still
// exists with the uid the token names, as Kubernetes' TokenReview does, and gives the source
// addresses of a bound pod. It is safe for concurrent use.
type BoundObjects struct {
	pods   *PodCache
	client metadata.Interface
	status PodStatusGetter
	ttl    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	lookups map[string]lookup
}

// lookup is a remembered answer: an object's uid (or that it does not exist), or a pod's
// addresses.
type lookup struct {
	at    time.Time
	uid   string
	addrs []string
	err   error
}

// NewBoundObjects validates cfg.
func NewBoundObjects(cfg BoundConfig) (*BoundObjects, error) {
	switch {
	case cfg.Pods == nil:
		return nil, errors.New("kube: a pod cache is required")
	case cfg.Client == nil:
		return nil, errors.New("kube: kubernetes client is required")
	case cfg.TTL < 0:
		return nil, fmt.Errorf("kube: negative bound-object lookup TTL %s", cfg.TTL)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &BoundObjects{
		pods: cfg.Pods, client: cfg.Client, status: cfg.PodStatus,
		ttl: cmp.Or(cfg.TTL, DefaultBoundLookupTTL), now: now,
		lookups: map[string]lookup{},
	}, nil
}

// CheckBound checks the object id's token is bound to. A pod-bound token is checked against
// its pod only: the node Kubernetes 1.30+ adds to it is where the pod was scheduled, which
// never changes for the pod, and TokenReview does not check it either. A Secret- or node-bound
// token is checked with a (remembered) metadata lookup. A token bound to nothing passes.
// Errors wrap ErrPod*, ErrSecret*, ErrNode*, ErrBoundObjectUnverifiable or ErrPodsNotSynced.
func (b *BoundObjects) CheckBound(ctx context.Context, id Identity) error {
	switch {
	case id.PodName != "" || id.PodUID != "":
		return b.pods.Check(id, b.now())
	case id.SecretName != "" || id.SecretUID != "":
		return b.checkObject(ctx, secretsResource, id.Namespace, id.SecretName, id.SecretUID, ErrSecretNotFound, ErrSecretUIDMismatch)
	case id.NodeName != "" || id.NodeUID != "":
		return b.checkObject(ctx, nodesResource, "", id.NodeName, id.NodeUID, ErrNodeNotFound, ErrNodeUIDMismatch)
	}
	return nil
}

func (b *BoundObjects) checkObject(ctx context.Context, gvr schema.GroupVersionResource, ns, name, uid string, notFound, mismatch error) error {
	what := gvr.Resource + " " + name
	if ns != "" {
		what = gvr.Resource + " " + ns + "/" + name
	}
	l := b.remembered(gvr.Resource+"/"+ns+"/"+name, func() (lookup, bool) {
		if name == "" {
			return lookup{err: apierrors.NewNotFound(gvr.GroupResource(), name)}, true
		}
		m, err := b.client.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return lookup{err: err}, true
		}
		return lookup{uid: string(m.UID)}, true
	})
	switch {
	case apierrors.IsNotFound(l.err):
		return fmt.Errorf("%w: %s", notFound, what)
	case l.err != nil:
		return fmt.Errorf("%w: %s: %w", ErrBoundObjectUnverifiable, what, l.err)
	case l.uid != uid:
		return fmt.Errorf("%w: %s has uid %s, token has %q", mismatch, what, l.uid, uid)
	}
	return nil
}

// SourceAddresses returns the addresses the user of id may connect from (BIND_SOURCE_IP): its
// bound pod's IPs as /32 and /128 prefixes, read from the pod's status (remembered for the
// TTL). A token bound to no pod, or a pod without an IP yet, gives ErrPodNoIP; a pod that is
// gone or another one gives ErrPodNotFound or ErrPodUIDMismatch.
func (b *BoundObjects) SourceAddresses(ctx context.Context, id Identity) ([]string, error) {
	if id.PodName == "" {
		return nil, fmt.Errorf("%w: the token is not bound to a pod", ErrPodNoIP)
	}
	if b.status == nil {
		return nil, fmt.Errorf("%w: no pod status client", ErrBoundObjectUnverifiable)
	}
	what := id.Namespace + "/" + id.PodName
	l := b.remembered("pods/"+what+"/"+id.PodUID, func() (lookup, bool) {
		a, err := b.status.PodAddresses(ctx, id.Namespace, id.PodName)
		if err != nil {
			return lookup{err: err}, true
		}
		// A pod without an address yet gets one soon: asked again on the next login.
		addrs := a.Prefixes()
		return lookup{uid: a.UID, addrs: addrs}, len(addrs) > 0
	})
	switch {
	case apierrors.IsNotFound(l.err):
		return nil, fmt.Errorf("%w: %s", ErrPodNotFound, what)
	case l.err != nil:
		return nil, fmt.Errorf("%w: pod %s: %w", ErrBoundObjectUnverifiable, what, l.err)
	case l.uid != id.PodUID:
		return nil, fmt.Errorf("%w: %s has uid %s, token has %q", ErrPodUIDMismatch, what, l.uid, id.PodUID)
	case len(l.addrs) == 0:
		return nil, fmt.Errorf("%w: pod %s has no IP in its status yet", ErrPodNoIP, what)
	}
	return l.addrs, nil
}

// remembered returns the lookup under key if it is younger than the TTL, else runs fetch and
// remembers its answer if fetch says so. Context errors are never remembered: they are the
// request's, not the object's.
func (b *BoundObjects) remembered(key string, fetch func() (lookup, bool)) lookup {
	now := b.now()
	b.mu.Lock()
	l, ok := b.lookups[key]
	b.mu.Unlock()
	if ok && now.Sub(l.at) < b.ttl {
		return l
	}
	l, keep := fetch()
	l.at = now
	if !keep || errors.Is(l.err, context.Canceled) || errors.Is(l.err, context.DeadlineExceeded) {
		return l
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lookups) >= maxBoundLookups {
		for k, old := range b.lookups {
			if now.Sub(old.at) >= b.ttl || len(b.lookups) > maxBoundLookups/2 {
				delete(b.lookups, k)
			}
		}
	}
	b.lookups[key] = l
	return l
}
