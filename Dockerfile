# nats-k8s-oidc-callout: a static binary on distroless, running as non-root. No shell inside.
#
#   docker build --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse --short=12 HEAD) -t IMAGE .
#
# The release image is built by `make image` without any container engine (docs/release.md)
# and checked by `make image-check`; this file builds the equivalent image where docker is
# the tool at hand: the same binary, user 65532, entrypoint and labels, on distroless' static
# base (CA certificates, /etc/passwd) instead of ours.
#
# The binary is the one `make build` produces with the same Go version: CGO off, -trimpath,
# -buildvcs=false (the build context has no .git), the same ldflags, and -tags nodevserver
# (dev mode's embedded nats-server stays out of the image). Multi-arch with
# `docker buildx build --platform linux/amd64,linux/arm64`: Go cross-compiles, no emulation.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Dependencies first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG TARGETOS=linux
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -tags nodevserver \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/nats-k8s-oidc-callout .

# static-debian12 has CA certificates (for a JWKS_URL outside the cluster), tzdata and
# /etc/passwd with the nonroot user (65532), and nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.source="https://github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.licenses="NOASSERTION"
COPY --from=build /out/nats-k8s-oidc-callout /nats-k8s-oidc-callout
USER 65532:65532
# /healthz, /readyz, /metrics (HTTP_ADDR)
EXPOSE 8080
ENTRYPOINT ["/nats-k8s-oidc-callout"]
