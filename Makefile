# nats-k8s-oidc-callout
#
#   make demo    run the service on an embedded NATS server and token issuer (no cluster)
#   make test    vet and run the unit and integration tests (embedded nats-server, race detector)
#   make load    the service's CPU per login next to a minimal callout's, on the e2e harness
#   make e2e     end-to-end suite on a real kube-apiserver, etcd, nats-server and NATS CLI
#   make bench   benchmarks of the decision path
#   make fuzz    every fuzz target for FUZZTIME (default 1m) each; make test runs each for 300 inputs
#   make build   static binary in bin/ (without dev mode's embedded nats-server)
#   make image   multi-platform OCI image in bin/image (no container engine needed)
#   make lint    gofmt, go vet and golangci-lint
#
# Releases (docs/release.md): release-binaries, sbom, checksums, image, image-check,
# image-push, image-load, check-release-version, set-version, release-publish.

BINARY  := nats-k8s-oidc-callout
MODULE  := github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout
SOURCE_URL := https://$(MODULE)
# VERSION: the release tag on HEAD (v1.2.3), else "dev"; "-dirty" is added while tracked files
# have uncommitted changes. It never contains the commit hash, so `--version` shows each once.
# COMMIT: the commit's short hash; REVISION: the full one (the image's revision label).
# SOURCE_DATE_EPOCH: the commit's time, stamped into the image so that a rebuild is identical.
ifeq ($(shell git rev-parse --is-inside-work-tree 2>/dev/null),true)
GIT_TAG   := $(shell git describe --tags --exact-match --match 'v[0-9]*' HEAD 2>/dev/null)
GIT_DIRTY := $(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD)
REVISION  ?= $(shell git rev-parse HEAD)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct HEAD)
endif
VERSION ?= $(or $(GIT_TAG),dev)$(GIT_DIRTY)
COMMIT  ?= unknown
REVISION ?= unknown
SOURCE_DATE_EPOCH ?= 0
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GOBUILD := CGO_ENABLED=0 go build -trimpath -tags nodevserver -ldflags "$(LDFLAGS)"

# The image: the repository the Helm values name, tagged with the version.
IMAGE_REPO ?= ghcr.io/nats-k8s-oidc-callout/nats-k8s-oidc-callout
IMAGE      ?= $(IMAGE_REPO):$(VERSION)
IMAGE_PLATFORMS := linux/amd64 linux/arm64
# The largest compressed size (what a node pulls) of one platform's image, 8 MiB; README.md states it
# and docs/release.md how it was measured. make image-check fails above it.
IMAGE_SIZE_BUDGET := 8388608
# The image's org.opencontainers.image.licenses label, an SPDX expression. The repository has
# no LICENSE file yet: NOASSERTION says so. With a LICENSE file this is empty until it is set
# to the file's identifier, and make image-check fails meanwhile.
IMAGE_LICENSES ?= $(if $(wildcard LICENSE LICENSE.* COPYING),,NOASSERTION)

# Release files: binaries, SBOMs and SHA256SUMS under bin/release/<version>/.
RELEASE_PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
RELEASE_DIR := bin/release/$(VERSION)
IMAGE_DIR   := bin/image
E2E_BIN ?= $(CURDIR)/.bin
GOLANGCI_LINT_VERSION := v2.15.0
# The race detector needs cgo, which Go turns off when it finds no C compiler: then the tests
# run without it (and say so) rather than fail.
RACE    := $(if $(filter 1,$(shell go env CGO_ENABLED)),-race,)
comma   := ,
space   := $(subst ,, )

.PHONY: all build load test race bench fuzz demo check e2e tools lint clean \
	release-binaries image-binaries sbom checksums image image-check image-push image-load \
	check-release-version set-version release-publish release-tools

all: build test

build:
	$(GOBUILD) -o bin/$(BINARY) .

test:
	@test -n "$(RACE)" || echo "no C compiler (cgo off): running the tests without the race detector"
	go vet ./...
	go test $(RACE) -count=1 ./...
	FUZZTIME=300x scripts/fuzz.sh

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

# The service against a callout doing the protocol's work only: connects/s, p50/p99, CPU per connect.
load:
	E2E_BIN=$(E2E_BIN) E2E_LOAD_CONNECTS=$${E2E_LOAD_CONNECTS:-1000} E2E_LOAD_RUNS=$${E2E_LOAD_RUNS:-3} scripts/e2e.sh -run '^TestLoad$$'

# Memory and start-up of a sidecar with 50,000 ServiceAccounts and 50,000 pods in the real API server.
scale:
	E2E_BIN=$(E2E_BIN) E2E_SCALE_SERVICEACCOUNTS=$${E2E_SCALE_SERVICEACCOUNTS:-50000} E2E_SCALE_PODS=$${E2E_SCALE_PODS:-50000} scripts/e2e.sh -run '^TestScale$$'

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	go vet ./...
	GOBIN=$(E2E_BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	$(E2E_BIN)/golangci-lint run ./...
	$(E2E_BIN)/golangci-lint run --build-tags e2e ./e2e/

# The release binaries: one per platform, the same build as `make build`.
# bin/release/<version>/nats-k8s-oidc-callout_<version>_<os>_<arch>
release-binaries:
	$(call build-binaries,$(RELEASE_PLATFORMS))

image-binaries:
	$(call build-binaries,$(IMAGE_PLATFORMS))

# build-binaries PLATFORMS: one binary per os/arch in RELEASE_DIR.
define build-binaries
	@mkdir -p $(RELEASE_DIR)
	@for p in $(1); do \
		os=$${p%/*} arch=$${p#*/}; \
		echo "GOOS=$$os GOARCH=$$arch $(RELEASE_DIR)/$(BINARY)_$(VERSION)_$${os}_$${arch}"; \
		GOOS=$$os GOARCH=$$arch $(GOBUILD) -o $(RELEASE_DIR)/$(BINARY)_$(VERSION)_$${os}_$${arch} . || exit 1; \
	done
endef

release-tools:
	@E2E_BIN=$(E2E_BIN) scripts/build-tools.sh release-tool cyclonedx-gomod

# A CycloneDX SBOM per release binary (<binary>.cdx.json), from the module list Go records in
# the binary: exactly the modules linked into it, with their go.sum hashes. Licenses are not
# asserted (none are detected), the binary's own hashes are.
sbom: release-tools
	@test -n "$$(ls $(RELEASE_DIR)/$(BINARY)_$(VERSION)_* 2>/dev/null)" || { echo "no binaries in $(RELEASE_DIR): make release-binaries"; exit 1; }
	@for b in $(RELEASE_DIR)/$(BINARY)_$(VERSION)_*; do \
		case $$b in *.cdx.json|*SHA256SUMS) continue ;; esac; \
		$(E2E_BIN)/cyclonedx-gomod bin -json -noserial -notimestamp -version $(VERSION) -output $$b.cdx.json $$b || exit 1; \
		echo "$$b.cdx.json"; \
	done

# SHA256SUMS over the release files, checked right away.
checksums:
	@cd $(RELEASE_DIR) && rm -f SHA256SUMS && sha256sum $(BINARY)_$(VERSION)_* > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS && sha256sum --quiet -c SHA256SUMS
	@echo "$(RELEASE_DIR)/SHA256SUMS: $$(wc -l < $(RELEASE_DIR)/SHA256SUMS) files"

# The image, without a container engine: release-tool (e2e/tools/release) puts the linux
# binaries on a base layer of its own (passwd and group with nonroot 65532, CA certificates) and
# writes an OCI layout to bin/image. docs/release.md says what is in it.
image: image-binaries release-tools
	$(E2E_BIN)/release-tool build -out $(IMAGE_DIR) -version $(VERSION) -revision $(REVISION) \
		-created $(SOURCE_DATE_EPOCH) -source $(SOURCE_URL) -licenses "$(IMAGE_LICENSES)" \
		-description "NATS auth callout for Kubernetes ServiceAccount tokens (sidecar of the NATS Helm chart)" \
		$(foreach p,$(IMAGE_PLATFORMS),-binary $(p)=$(RELEASE_DIR)/$(BINARY)_$(VERSION)_$(subst /,_,$(p)))

# Checks the layout: platforms, user, entrypoint, labels, no shell, the size budget, the
# entrypoint is the release binary, it runs (--version), and a push to a local registry.
image-check: release-tools
	$(E2E_BIN)/release-tool check -layout $(IMAGE_DIR) -version $(VERSION) -commit $(COMMIT) \
		-revision $(REVISION) -source $(SOURCE_URL) -budget $(IMAGE_SIZE_BUDGET) \
		-platforms $(subst $(space),$(comma),$(IMAGE_PLATFORMS)) \
		$(foreach p,$(IMAGE_PLATFORMS),-binary $(p)=$(RELEASE_DIR)/$(BINARY)_$(VERSION)_$(subst /,_,$(p)))

# Pushes bin/image as IMAGE (default $(IMAGE_REPO):<version>). Credentials: REGISTRY_USERNAME
# and REGISTRY_PASSWORD, or docker's config.json (`docker login`) and credential helpers.
image-push: release-tools
	@case "$(VERSION)" in *dirty*) echo "refusing to push a build of uncommitted changes ($(VERSION))"; exit 1 ;; esac
	$(E2E_BIN)/release-tool push -layout $(IMAGE_DIR) $(IMAGE)

# Where docker runs: loads this machine's platform of bin/image as IMAGE.
image-load: release-tools
	@command -v docker >/dev/null || { echo "make image-load needs docker; make image needs none"; exit 1; }
	$(E2E_BIN)/release-tool docker-tar -layout $(IMAGE_DIR) -platform linux/$$(go env GOARCH) -tag $(IMAGE) -out bin/image-linux-$$(go env GOARCH).tar
	docker load -i bin/image-linux-$$(go env GOARCH).tar

# A release's version agrees everywhere: VERSION is a release tag (vX.Y.Z), the Helm values'
# calloutImage.tag and the docs' image references are VERSION, and a tag VERSION, if it exists,
# is on HEAD (release_test.go).
check-release-version:
	@test -n "$(filter command line environment,$(origin VERSION))" || { echo "usage: make check-release-version VERSION=vX.Y.Z"; exit 1; }
	RELEASE_VERSION=$(VERSION) go test -count=1 -run 'TestReleaseVersion' .

# Writes VERSION into the Helm values and the docs (before tagging a release).
set-version:
	@test -n "$(filter command line environment,$(origin VERSION))" || { echo "usage: make set-version VERSION=vX.Y.Z"; exit 1; }
	@old=$$(sed -n 's/^  tag: \(v[0-9][^ ]*\)$$/\1/p' helm-values/callout-values.yaml); \
	test -n "$$old" || { echo "no calloutImage.tag in helm-values/callout-values.yaml"; exit 1; }; \
	files=$$(git grep -l -F -e "$(IMAGE_REPO):$$old" -e "tag: $$old" -- helm-values docs README.md); \
	sed -i -e "s|$(IMAGE_REPO):$$old|$(IMAGE_REPO):$(VERSION)|g" -e "s|^  tag: $$old\$$|  tag: $(VERSION)|" $$files; \
	echo "$$old -> $(VERSION) in: $$files"
	RELEASE_VERSION=$(VERSION) go test -count=1 -run 'TestReleaseVersion/files' .

# The GitHub release of VERSION with the release files (the workflow's last step; needs gh and
# GH_TOKEN). GH="echo gh" shows the command instead.
GH ?= gh
release-publish:
	@test -s $(RELEASE_DIR)/SHA256SUMS || { echo "no $(RELEASE_DIR)/SHA256SUMS: make release-binaries sbom checksums"; exit 1; }
	cd $(RELEASE_DIR) && sha256sum --quiet -c SHA256SUMS
	$(GH) release create $(VERSION) --verify-tag --title $(VERSION) --generate-notes \
		$(RELEASE_DIR)/$(BINARY)_$(VERSION)_* $(RELEASE_DIR)/SHA256SUMS

clean:
	rm -rf bin
