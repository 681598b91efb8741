// Package kube turns a Kubernetes ServiceAccount token into NATS permissions.
//
// A Verifier checks the token against the cluster's JWKS (fetched in the background, refreshed
// on an unknown kid within a rate limit) and the Kubernetes claim rules, and yields an Identity.
// A Store looks the ServiceAccount up in a shared-informer cache of ServiceAccount metadata
// (list/watch through the metadata API), refuses it when it is gone,
// being deleted, or was recreated under the same name (uid mismatch), and parses its
// nats.io/ annotations into a Policy with ParsePolicy. Every refusal wraps one of the package's
// sentinel errors; package callout turns it into a metric label.
//
// The in-memory stand-ins for the API server and its token issuer that dev mode and tests use
// are in internal/kubefake.
package kube
