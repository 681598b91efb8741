#!/usr/bin/env bash
# Stops the processes that cluster-up.sh (and nats-up.sh) started in DIR.
#
#   scripts/cluster-down.sh [--purge] DIR [NAME...]
#
# Without NAMEs, stops every process recorded in DIR/*.pid: first everything
# else (kube-apiserver, nats servers), then etcd, so the API server does not
# spend its shutdown retrying a vanished etcd. With NAMEs (e.g. `nats-b`),
# stops only DIR/NAME.pid, e.g. to restart one nats-server in a test.
#
# Each process gets TERM, then KILL after E2E_STOP_TIMEOUT seconds (default
# 5). Only the recorded PIDs are signalled, and only while they still run the
# recorded binary; nothing is found or killed by name. Exits non-zero if a
# process survives. Stopping what is already stopped succeeds.
#
# Logs and PKI stay in DIR for post-mortems. DIR/env is removed once the
# control plane is stopped (its presence means "cluster up"). --purge also
# removes the etcd data directory.
set -euo pipefail

# shellcheck source=SCRIPTDIR/../e2e/tools/lib.sh
. "$(dirname "$0")/../e2e/tools/lib.sh"

purge=0
dir=
names=()
for arg in "$@"; do
	case $arg in
	--purge) purge=1 ;;
	-h | --help) e2e_usage ;;
	-*) e2e_die "unknown option $arg" ;;
	*) if [[ -z $dir ]]; then dir=$arg; else names+=("$arg"); fi ;;
	esac
done
[[ -n $dir ]] || e2e_die "usage: $0 [--purge] DIR [NAME...]"
if [[ ! -d $dir ]]; then
	e2e_log "$dir does not exist; nothing to stop"
	exit 0
fi
dir=$(cd "$dir" && pwd)
timeout=${E2E_STOP_TIMEOUT:-5}

first=() last=()
if ((${#names[@]})); then
	for n in "${names[@]}"; do first+=("$dir/$n.pid"); done
else
	shopt -s nullglob
	for f in "$dir"/*.pid; do
		if [[ $f == "$dir/etcd.pid" ]]; then last+=("$f"); else first+=("$f"); fi
	done
fi

rc=0
((${#first[@]} == 0)) || e2e_stop "$timeout" "${first[@]}" || rc=1
((${#last[@]} == 0)) || e2e_stop "$timeout" "${last[@]}" || rc=1

if [[ ! -f $dir/kube-apiserver.pid && ! -f $dir/etcd.pid ]]; then
	rm -f -- "$dir/env"
	if ((purge)); then rm -rf -- "$dir/etcd-data"; fi
fi
exit $rc
