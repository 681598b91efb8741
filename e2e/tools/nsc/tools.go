//go:build tools

// Package tools records the binary this wrapper module pins, so that
// `go mod tidy` keeps its dependencies in go.mod and go.sum.
package tools

import (
	_ "github.com/nats-io/nsc/v2/cmd"
)
