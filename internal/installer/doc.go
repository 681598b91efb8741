// Package installer is what `nats-k8s-oidc-callout init` does: it generates the service's keys
// (or rotates its issuer key) and renders the files that go with them.
//
//   - GenerateInstall creates the seeds, or takes them from an existing Secret for a rotation,
//     and renders InstallFiles: the Secret manifest (SecretManifest, read back by
//     ParseSecretManifest), the nats-server config and the NATS Helm chart values. It does no
//     I/O; InstallFiles.WriteDir writes the files atomically without losing existing keys, and
//     InstallFiles.NextSteps tells the operator what to apply.
//   - ServerConfig is the nats-server side of server-config mode (accounts, system account,
//     authorization.auth_callout), validated and rendered as config text (NATSConfig) or as the
//     Helm chart's config.merge (HelmConfigMerge). Dev mode uses it too.
//
// Seeds are checked with the callout package's parsers, the ones the sidecar reads them with.
package installer
