package callout

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// BoundObjectChecker checks that the object a token is bound to (pod, Secret, node) still
// exists with the token's uid. An error wrapping kube.ErrNotSynced drops the request.
type BoundObjectChecker interface {
	CheckBound(ctx context.Context, id kube.Identity) error
}

// SourcePinner gives the source addresses (CIDRs) a user may connect from.
type SourcePinner interface {
	SourceAddresses(ctx context.Context, id kube.Identity) ([]string, error)
}

// bound checks the objects id's token is bound to and, with source pinning, that the client's
// address (host, as nats-server signed it into the request) is one of the addresses the user
// may connect from, which it returns. An error comes with its reason, as grant's do.
func (h *Handler) bound(ctx context.Context, id kube.Identity, host string) ([]string, string, error) {
	if h.cfg.Bound != nil {
		if err := ctx.Err(); err != nil {
			return nil, ReasonDeadline, err
		}
		err := h.cfg.Bound.CheckBound(ctx, id)
		if errors.Is(err, kube.ErrNotSynced) {
			return nil, ReasonNotReady, err
		}
		if err != nil {
			return nil, reasonOf(err), err
		}
	}
	if h.cfg.Sources == nil {
		return nil, "", nil
	}
	if err := ctx.Err(); err != nil {
		return nil, ReasonDeadline, err
	}
	src, err := h.cfg.Sources.SourceAddresses(ctx, id)
	if err == nil && len(src) == 0 {
		// Never an empty list: nats-server reads it as "from anywhere".
		err = fmt.Errorf("%w: no source address for %s/%s", kube.ErrPodNoIP, id.Namespace, id.PodName)
	}
	if err != nil {
		return nil, reasonOf(err), err
	}
	// nats-server (2.15) does not check the sources of a user JWT an auth callout issued, so
	// the service does; the user JWT carries them as well.
	if !sourceAllowed(host, src) {
		return nil, ReasonSourceMismatch, fmt.Errorf("client address %q is not an address of pod %s/%s (%s)",
			clipValue(host), id.Namespace, id.PodName, strings.Join(src, ", "))
	}
	return src, "", nil
}

// sourceAllowed reports whether host, an IP address, lies in one of the CIDRs src.
func sourceAllowed(host string, src []string) bool {
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, s := range src {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(addr) {
			return true
		}
	}
	return false
}
