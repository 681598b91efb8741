// Package kubefake holds in-memory stand-ins for the Kubernetes API and the token issuer, used
// by dev mode and tests; never by the sidecar's runtime path.
//
// MemoryCluster serves ServiceAccounts and pods behind the metadata list/watch API that
// kube.Store and kube.PodCache read (and pods' IPs as a kube.PodStatusGetter),
// SyncServiceAccounts makes its ServiceAccounts match a manifest, and TokenIssuer mints tokens
// with the API server's claim shape and publishes its JWKS.
package kubefake
