#!/usr/bin/env bash
# Starts one nats-server on 127.0.0.1 from a config file, on free ports.
#
#   scripts/nats-up.sh DIR NAME CONFIG [-- EXTRA_NATS_SERVER_ARGS...]
#
# Runs `nats-server -c CONFIG -a 127.0.0.1 -p PORT -m HTTP_PORT EXTRA...`:
# the command-line flags override the config's client listen address and
# monitor port (and keep doing so across SIGHUP reloads), so CONFIG holds only
# what a test cares about (accounts, auth_callout, cluster, ...) and its
# relative includes keep working. Do not give CONFIG an `http:` with a host
# other than 127.0.0.1; without one the monitor follows -a.
#
# PORT and HTTP_PORT are taken from NATS_PORT and NATS_HTTP_PORT if set,
# otherwise picked free. The server runs with NATS_NAME, NATS_PORT and
# NATS_HTTP_PORT in its environment, and NATS config resolves `$VAR` from the
# environment, so CONFIG may say `server_name: $NATS_NAME`. (The name is not
# passed as -n: nats-server then refuses every SIGHUP reload with "config
# reload not supported for ServerName".)
#
# Checks CONFIG with `nats-server -t` first, waits for /healthz, then writes
# DIR/NAME.env (KEY=value lines): NATS_NAME NATS_URL NATS_PORT NATS_HTTP_PORT
# NATS_MONITOR_URL NATS_PID NATS_CONFIG NATS_LOG. The log is DIR/NAME.log and
# the PID record DIR/NAME.pid; stop it with `scripts/cluster-down.sh DIR NAME`
# (or with the rest of DIR by `scripts/cluster-down.sh DIR`), reload it with
# `kill -HUP $NATS_PID`.
#
# Environment: E2E_BIN, E2E_SKIP_BUILD=1 (as for cluster-up.sh).
set -euo pipefail

# shellcheck source=SCRIPTDIR/../e2e/tools/lib.sh
. "$(dirname "$0")/../e2e/tools/lib.sh"

case ${1:-} in -h | --help) e2e_usage ;; esac
(($# >= 3)) || e2e_die "usage: $0 DIR NAME CONFIG [-- EXTRA_NATS_SERVER_ARGS...]"
dir=$1 name=$2 config=$3
shift 3
if (($#)); then
	[[ $1 == -- ]] || e2e_die "extra nats-server arguments go after --"
	shift
fi
[[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || e2e_die "NAME must be a plain word"
[[ $name != etcd && $name != kube-apiserver ]] || e2e_die "NAME '$name' is taken by the control plane"
[[ -f $config ]] || e2e_die "no config file $config"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
e2e_check_path "$dir"
e2e_check_path "$config"

if [[ -f $dir/$name.pid ]] && e2e_is_ours "$dir/$name.pid"; then
	e2e_die "$name is already running in $dir; stop it with scripts/cluster-down.sh $dir $name"
fi
if [[ ${E2E_SKIP_BUILD:-0} != 1 ]]; then
	"$E2E_ROOT/scripts/build-tools.sh" nats-server
fi
[[ -d $E2E_BIN ]] || e2e_die "$E2E_BIN does not exist; run scripts/build-tools.sh"
E2E_BIN=$(cd "$E2E_BIN" && pwd) # absolute, for the env file
NATS_SERVER=$E2E_BIN/nats-server
[[ -x $NATS_SERVER ]] || e2e_die "$NATS_SERVER is missing; run scripts/build-tools.sh nats-server"
rm -f -- "$dir/$name.env"

t0=$SECONDS
fixed_port=${NATS_PORT:-} fixed_http_port=${NATS_HTTP_PORT:-}
for attempt in 1 2 3; do
	ports=$(e2e_free_ports 2)
	read -r port http_port <<<"$ports"
	port=${fixed_port:-$port}
	http_port=${fixed_http_port:-$http_port}
	args=(-c "$config" -a 127.0.0.1 -p "$port" -m "$http_port" "$@")
	export NATS_NAME=$name NATS_PORT=$port NATS_HTTP_PORT=$http_port

	# A config error is reported here, plainly, rather than as a server
	# that never becomes healthy.
	if ! out=$("$NATS_SERVER" "${args[@]}" -t 2>&1); then
		printf '%s\n' "$out" >&2
		e2e_die "nats-server rejects $config"
	fi

	e2e_start "$name" "$dir" "$NATS_SERVER" "${args[@]}"
	pid=$E2E_STARTED_PID
	deadline=$((SECONDS + 20))
	clash=0
	until e2e_http_ok 127.0.0.1 "$http_port" /healthz; do
		if ! e2e_alive "$pid"; then
			if grep -q 'address already in use' "$dir/$name.log" && [[ -z $fixed_port$fixed_http_port ]]; then
				clash=1
				break
			fi
			tail -n 20 "$dir/$name.log" >&2
			e2e_die "nats-server $name exited; see $dir/$name.log"
		fi
		if ((SECONDS >= deadline)); then
			e2e_stop 5 "$dir/$name.pid" || true
			e2e_die "nats-server $name not healthy after 20s; see $dir/$name.log"
		fi
		sleep 0.05
	done
	((clash)) || break
	e2e_log "a picked port was taken meanwhile; retrying with new ports"
	rm -f "$dir/$name.pid"
	((attempt < 3)) || e2e_die "could not bind free ports"
done

cat >"$dir/$name.env.tmp" <<EOF
NATS_NAME=$name
NATS_URL=nats://127.0.0.1:$port
NATS_PORT=$port
NATS_HTTP_PORT=$http_port
NATS_MONITOR_URL=http://127.0.0.1:$http_port
NATS_PID=$pid
NATS_CONFIG=$config
NATS_LOG=$dir/$name.log
EOF
mv -f "$dir/$name.env.tmp" "$dir/$name.env"
e2e_log "nats-server $name ready on nats://127.0.0.1:$port (pid $pid, $((SECONDS - t0))s)"
