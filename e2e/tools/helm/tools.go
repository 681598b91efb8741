//go:build tools

// Package tools records the binary this wrapper module pins, so that
// `go mod tidy` keeps its dependencies in go.mod and go.sum.
//
// helm has no library package that covers its command's imports (cobra/doc,
// plugin installers, file locks, ...), so this imports the main package
// itself; the file is never compiled, and `go mod tidy` accepts it.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
