# nats-k8s-oidc-callout
#
#   make demo    run the service on an embedded NATS server and token issuer (no cluster)
#   make test    vet and run the unit and integration tests (embedded nats-server, race detector)
#   make e2e     end-to-end suite on a real kube-apiserver, etcd, nats-server and NATS CLI
#   make bench   benchmarks of the decision path
#   make fuzz    every fuzz target for FUZZTIME (default 1m) each; make test runs each for 3s
#   make build   static binary in bin/ (without dev mode's embedded nats-server)
#   make image   container image (needs docker or podman)
#   make lint    gofmt, go vet and golangci-lint

BINARY  := nats-k8s-oidc-callout
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
IMAGE   ?= nats-k8s-oidc-callout:$(VERSION)
E2E_BIN ?= $(CURDIR)/.bin
GOLANGCI_LINT_VERSION := v2.15.0
# The race detector needs cgo, which Go turns off when it finds no C compiler: then the tests
# run without it (and say so) rather than fail.
RACE    := $(if $(filter 1,$(shell go env CGO_ENABLED)),-race,)

.PHONY: all build test race bench fuzz demo check e2e tools lint image clean

all: build test

build:
	CGO_ENABLED=0 go build -trimpath -tags nodevserver -ldflags "$(LDFLAGS)" -o bin/$(BINARY) .

test:
	@test -n "$(RACE)" || echo "no C compiler (cgo off): running the tests without the race detector"
	go vet ./...
	go test $(RACE) -count=1 ./...
	FUZZTIME=3s scripts/fuzz.sh

bench:
	go test -run '^$$' -bench . -benchmem ./callout/ ./kube/ ./reload/

# A failing input lands in the package's testdata/fuzz/: commit it with the fix (scripts/fuzz.sh).
FUZZTIME ?= 1m
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

demo:
	go run . dev

check:
	go run . dev --check

tools:
	E2E_BIN=$(E2E_BIN) scripts/build-tools.sh

e2e:
	E2E_BIN=$(E2E_BIN) scripts/e2e.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	go vet ./...
	GOBIN=$(E2E_BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	$(E2E_BIN)/golangci-lint run ./...
	$(E2E_BIN)/golangci-lint run --build-tags e2e ./e2e/

image:
	@engine=$$(command -v docker || command -v podman) || { echo "make image needs docker or podman; make build produces the same binary"; exit 1; }; \
	$$engine build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

clean:
	rm -rf bin
