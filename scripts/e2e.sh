#!/usr/bin/env bash
# Runs the end-to-end suite: the built service binary against a real kube-apiserver + etcd, real
# nats-server binaries and the NATS CLI, all on 127.0.0.1.
#
#   scripts/e2e.sh [GO_TEST_ARGS...]        e.g. scripts/e2e.sh -run 'TestCluster'
#
# 1. builds the pinned tools into E2E_BIN (scripts/build-tools.sh; unchanged ones are skipped),
#    the service binary and the test binary;
# 2. starts etcd + kube-apiserver in a fresh temporary directory (scripts/cluster-up.sh);
# 3. runs `go test -tags e2e -count=1 -v -timeout 40m ./e2e/` with the control plane's env and
#    E2E_SERVICE_BIN / E2E_WORK_DIR; the tests start and stop their own nats-servers and
#    service instances;
# 4. always stops exactly what it started: the control plane by its PID records, and any test
#    process still running (a test binary killed by its timeout cannot run its cleanups) by the
#    PID records the tests write under E2E_WORK_DIR/pids.
#
# Prints the time of each phase. Exits non-zero if anything fails. The work directory (logs of
# every process) is removed after a green run and kept after a failure, or always with
# E2E_KEEP=1.
#
# Environment: E2E_BIN (tools, default <repo>/.bin), E2E_KEEP=1, TMPDIR.
set -euo pipefail

# shellcheck source=SCRIPTDIR/../e2e/tools/lib.sh
. "$(dirname "$0")/../e2e/tools/lib.sh"

case ${1:-} in -h | --help) e2e_usage ;; esac

cd "$E2E_ROOT"
command -v go >/dev/null || e2e_die "go is not on PATH"
mkdir -p "$E2E_BIN"
E2E_BIN=$(cd "$E2E_BIN" && pwd)
export E2E_BIN

work=$(mktemp -d "${TMPDIR:-/tmp}/nats-callout-e2e.XXXXXX")
work=$(cd "$work" && pwd -P)
e2e_check_path "$work"
cluster=$work/cluster
pids=$work/run/pids
mkdir -p "$cluster" "$pids"

t_start=$SECONDS
t_tools=- t_build=- t_cluster=- t_run=-

# shellcheck disable=SC2317 # summary and teardown run from the EXIT trap
summary() {
	e2e_log "timings: tools ${t_tools}s, service + test build ${t_build}s, control plane ${t_cluster}s, tests ${t_run}s, total $((SECONDS - t_start))s"
}

# shellcheck disable=SC2317
teardown() {
	local rc=$?
	trap - EXIT INT TERM
	# Test processes first (they talk to the API server), then the control plane.
	shopt -s nullglob
	local left=("$pids"/*.pid)
	if ((${#left[@]})); then
		e2e_stop 10 "${left[@]}" || rc=1
	fi
	scripts/cluster-down.sh "$cluster" || rc=1
	summary
	if ((rc == 0)) && [[ ${E2E_KEEP:-0} != 1 ]]; then
		rm -rf -- "$work"
	else
		e2e_log "logs kept in $work"
	fi
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

phase=$SECONDS
"$E2E_ROOT/scripts/build-tools.sh" kube-apiserver kubectl etcd nats-server nats nsc
t_tools=$((SECONDS - phase))

phase=$SECONDS
e2e_log "building the service binary"
CGO_ENABLED=0 go build -trimpath \
	-ldflags "-X main.version=e2e -X main.commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	-o "$work/bin/nats-k8s-oidc-callout" .
# The load run's yardstick: a callout doing the protocol's own work only.
go build -trimpath -o "$work/bin/floor-callout" ./e2e/floor
# Compiles the suite (into the build cache) before anything starts, so a compile error costs
# no control plane and the run below measures the tests alone.
e2e_log "compiling the end-to-end suite"
go test -tags e2e -c -o "$work/bin/e2e.test" ./e2e/
t_build=$((SECONDS - phase))

phase=$SECONDS
E2E_SKIP_BUILD=1 scripts/cluster-up.sh "$cluster"
set -a
# shellcheck disable=SC1091
. "$cluster/env"
set +a
t_cluster=$((SECONDS - phase))

export E2E_SERVICE_BIN=$work/bin/nats-k8s-oidc-callout
export E2E_FLOOR_BIN=$work/bin/floor-callout
export E2E_WORK_DIR=$work/run

phase=$SECONDS
rc=0
go test -tags e2e -count=1 -v -timeout 40m ./e2e/ "$@" || rc=$?
t_run=$((SECONDS - phase))
if ((rc != 0)); then
	e2e_log "end-to-end tests failed (exit $rc)"
fi
exit "$rc"
