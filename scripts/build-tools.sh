#!/usr/bin/env bash
# Builds the pinned end-to-end tools from the Go module proxy into
# ${E2E_BIN:-<repo>/.bin}.
#
#   scripts/build-tools.sh [-f|--force] [TOOL...]
#
# TOOL is any of: kube-apiserver kubectl etcd nats-server nats nsc helm
# release-tool cyclonedx-gomod (default: all of them). Each tool is pinned by a
# wrapper module under e2e/tools/<module>/ with a committed go.sum, so the
# build is reproducible and `go install` restrictions (replace directives,
# missing checksum-database entries) do not apply. release-tool is the
# project's own program (e2e/tools/release: make image, image-check,
# image-push); cyclonedx-gomod writes the SBOMs of `make sbom`.
#
# A binary is rebuilt only when its inputs change: the wrapper's go.mod and
# go.sum, its own Go files (tools.go aside), the package path, the ldflags and
# build environment, and `go version`. Their hash is kept in BIN/TOOL.stamp
# next to the binary.
# --force ignores the stamps.
#
# Needs only Go and bash. Builds run one after another: kube-apiserver alone
# takes ~6-9 minutes and ~1.7 GB on 2 cores, and two heavy builds at once
# would only thrash.
set -euo pipefail

# shellcheck source=SCRIPTDIR/../e2e/tools/lib.sh
. "$(dirname "$0")/../e2e/tools/lib.sh"

ALL_TOOLS=(kube-apiserver kubectl etcd nats-server nats nsc helm release-tool cyclonedx-gomod)

# Version ldflags: without them kube-apiserver and kubectl report v0.0.0
# (kubectl then warns about version skew), nats and nsc report "development".
KUBE_VERSION=v1.34.2
KUBE_LDFLAGS="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION
 -X k8s.io/component-base/version.gitMajor=1
 -X k8s.io/component-base/version.gitMinor=34
 -X k8s.io/component-base/version.gitTreeState=clean
 -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION
 -X k8s.io/client-go/pkg/version.gitMajor=1
 -X k8s.io/client-go/pkg/version.gitMinor=34
 -X k8s.io/client-go/pkg/version.gitTreeState=clean"

# tool_spec TOOL: sets MODULE (wrapper dir under e2e/tools), PKG (main
# package) and LDFLAGS (extra -X flags) for TOOL.
tool_spec() {
	LDFLAGS=
	case $1 in
	kube-apiserver) MODULE=kube PKG=k8s.io/kubernetes/cmd/kube-apiserver LDFLAGS=$KUBE_LDFLAGS ;;
	kubectl) MODULE=kube PKG=k8s.io/kubernetes/cmd/kubectl LDFLAGS=$KUBE_LDFLAGS ;;
	etcd) MODULE=etcd PKG=go.etcd.io/etcd/server/v3 ;;
	nats-server) MODULE=nats PKG=github.com/nats-io/nats-server/v2 ;;
	nats) MODULE=natscli PKG=github.com/nats-io/natscli/nats LDFLAGS="-X main.version=v0.5.0" ;;
	nsc) MODULE=nsc PKG=github.com/nats-io/nsc/v2 LDFLAGS="-X main.version=2.12.0" ;;
	release-tool) MODULE=release PKG=. ;;
	cyclonedx-gomod) MODULE=cyclonedx PKG=github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod ;;
	helm)
		MODULE=helm PKG=helm.sh/helm/v3/cmd/helm
		# Like helm's Makefile: the Kubernetes version helm assumes for
		# `helm template`/lint (.Capabilities) follows its client-go minor.
		# client-go v0.N.x is Kubernetes 1.N.
		local cg minor
		cg=$(awk '$1 == "k8s.io/client-go" {print $2}' "$E2E_ROOT/e2e/tools/helm/go.mod")
		minor=${cg#v0.} minor=${minor%%.*}
		LDFLAGS="-X helm.sh/helm/v3/internal/version.version=v3.22.0
 -X helm.sh/helm/v3/internal/version.gitTreeState=clean
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
		;;
	*) e2e_die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
	esac
	LDFLAGS="-s -w ${LDFLAGS//$'\n'/}" # the lists above are multi-line
}

force=0
tools=()
for arg in "$@"; do
	case $arg in
	-f | --force) force=1 ;;
	-h | --help) e2e_usage ;;
	-*) e2e_die "unknown option $arg" ;;
	*) tools+=("$arg") ;;
	esac
done
((${#tools[@]})) || tools=("${ALL_TOOLS[@]}")

command -v go >/dev/null || e2e_die "go is not on PATH"
mkdir -p "$E2E_BIN"
E2E_BIN=$(cd "$E2E_BIN" && pwd)

# The build environment is fixed here rather than inherited: a stray GOFLAGS
# (-mod=mod would rewrite go.sum), a go.work above the repo, or cgo would make
# the result depend on the machine. -buildvcs=false keeps the repo's git state
# out of the binaries (and out of trouble on checkouts owned by another user).
export CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"
GO_VERSION=$(go version)
GO_TARGET=$(go env GOOS GOARCH GOAMD64 GOARM64 | tr '\n' ' ')

# Serialise concurrent invocations (e.g. two test packages asking for the
# tools at once) so they never write the same binary together.
if command -v flock >/dev/null; then
	exec 9>"$E2E_BIN/.build.lock"
	flock 9
fi

total_start=$SECONDS
for tool in "${tools[@]}"; do
	tool_spec "$tool"
	dir=$E2E_ROOT/e2e/tools/$MODULE
	out=$E2E_BIN/$tool
	stamp=$(
		{
			printf 'tool=%s\npkg=%s\nldflags=%s\ngo=%s\ntarget=%s\nenv=%s %s %s\n' \
				"$tool" "$PKG" "$LDFLAGS" "$GO_VERSION" "$GO_TARGET" "$CGO_ENABLED" "$GOFLAGS" -trimpath
			cat "$dir/go.mod" "$dir/go.sum"
			# A module with a program of its own (not only tools.go).
			find "$dir" -maxdepth 1 -name '*.go' ! -name tools.go -print0 | sort -z | xargs -0 -r cat
		} | sha256sum | cut -d' ' -f1
	)
	if ((!force)) && [[ -x $out && -f $out.stamp && $(cat "$out.stamp") == "$stamp" ]]; then
		e2e_log "$tool: up to date ($out)"
		continue
	fi
	e2e_log "$tool: building $PKG (module e2e/tools/$MODULE)"
	start=$SECONDS
	# Build next to the target and rename, so a failed or interrupted build
	# never leaves a half-written binary that a stale stamp would bless.
	rm -f "$out.stamp"
	(cd "$dir" && go build -trimpath -ldflags "$LDFLAGS" -o "$out.tmp" "$PKG")
	mv -f "$out.tmp" "$out"
	echo "$stamp" >"$out.stamp"
	e2e_log "$tool: built in $((SECONDS - start))s"
done
e2e_log "tools ready in $E2E_BIN ($((SECONDS - total_start))s)"
