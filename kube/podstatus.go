package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
)

// maxPodBytes bounds the pod read for its addresses; real pods are a few KiB, the API server's
// own limit on an object is 1.5 MiB.
const maxPodBytes = 3 << 20

// PodAddresses is what source pinning reads of a pod: its uid and status.podIPs.
type PodAddresses struct {
	UID string
	IPs []string
}

// PodStatusGetter reads one pod's uid and addresses. A pod that does not exist gives an error
// for which apierrors.IsNotFound holds.
type PodStatusGetter interface {
	PodAddresses(ctx context.Context, namespace, name string) (PodAddresses, error)
}

// Prefixes are the pod's IPs as host prefixes (/32 for IPv4, /128 for IPv6), the form
// nats-server takes as a user's allowed sources. Entries that are not IPs are left out.
func (a PodAddresses) Prefixes() []string {
	var out []string
	for _, ip := range a.IPs {
		addr, err := netip.ParseAddr(ip)
		if err != nil || addr.Zone() != "" {
			continue
		}
		addr = addr.Unmap()
		out = append(out, netip.PrefixFrom(addr, addr.BitLen()).String())
	}
	return out
}

// ParsePodAddresses reads the uid and status.podIPs (or, from an older API server, the
// single status.podIP) out of a pod as the API server returns it in JSON.
func ParsePodAddresses(data []byte) (PodAddresses, error) {
	var pod struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
		Status struct {
			PodIP  string `json:"podIP"`
			PodIPs []struct {
				IP string `json:"ip"`
			} `json:"podIPs"`
		} `json:"status"`
	}
	if err := json.Unmarshal(data, &pod); err != nil {
		return PodAddresses{}, fmt.Errorf("pod: %w", err)
	}
	a := PodAddresses{UID: Clip(pod.Metadata.UID, maxObjectName)}
	for _, ip := range pod.Status.PodIPs {
		a.IPs = append(a.IPs, ip.IP)
	}
	if len(a.IPs) == 0 && pod.Status.PodIP != "" {
		a.IPs = []string{pod.Status.PodIP}
	}
	return a, nil
}

// podStatusClient reads pods with plain GETs: the metadata API the informers use has no
// status, and a typed client would add every core/v1 type to the binary for two fields.
type podStatusClient struct {
	client *http.Client
	base   string
}

// NewPodStatusClient reads pods through the API server rc names, with its credentials.
func NewPodStatusClient(rc *rest.Config) (PodStatusGetter, error) {
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kube: pod status client: %w", err)
	}
	base := strings.TrimSuffix(rc.Host, "/")
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	return podStatusClient{client: hc, base: base}, nil
}

func (c podStatusClient) PodAddresses(ctx context.Context, namespace, name string) (PodAddresses, error) {
	u := c.base + "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods/" + url.PathEscape(name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return PodAddresses{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return PodAddresses{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxPodBytes))
	switch {
	case err != nil:
		return PodAddresses{}, err
	case resp.StatusCode == http.StatusNotFound:
		return PodAddresses{}, apierrors.NewNotFound(PodsResource.GroupResource(), name)
	case resp.StatusCode != http.StatusOK:
		return PodAddresses{}, fmt.Errorf("get pod %s/%s: %s", namespace, name, resp.Status)
	}
	a, err := ParsePodAddresses(data)
	if err == nil && a.UID == "" {
		err = errors.New("pod without uid")
	}
	return a, err
}
