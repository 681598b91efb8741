// Package callout answers NATS auth callout requests: it checks each request the server sends
// (signature, issuer, audience, optional xkey sealing), verifies the client's ServiceAccount
// token, looks up the ServiceAccount's permissions and answers with a signed user JWT or a
// signed error. Service keeps the NATS connection, its rotation and the worker pool; Handler
// makes one decision; the operator-mode checks live in operator.go. The matching nats-server
// config and Secret are written by the init command (internal/installer).
package callout
