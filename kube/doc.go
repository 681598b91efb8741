// Package kube turns a Kubernetes ServiceAccount token into NATS permissions.
//
// A Verifier checks the token against the cluster's JWKS (fetched in the background, refreshed
// on an unknown kid within a rate limit) and the Kubernetes claim rules, and yields an Identity.
// A Store looks the ServiceAccount up in a shared-informer cache of ServiceAccount metadata
// (list/watch through the metadata API), refuses it when it is gone,
// being deleted, or was recreated under the same name (uid mismatch), and parses its
// nats.io/ annotations into a Policy with ParsePolicy. Every refusal wraps one of the package's
// sentinel errors; Reason turns it into a metric label.
//
// TokenIssuer mints tokens with the API server's claim shape, and MemoryCluster serves
// ServiceAccounts behind the same list/watch API, for dev mode and tests.
package kube
