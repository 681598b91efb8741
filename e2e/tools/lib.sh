# shellcheck shell=bash
# Shared helpers for scripts/build-tools.sh, cluster-up.sh, cluster-down.sh and
# nats-up.sh. Sourced, never executed. Linux only (uses /proc).
#
# Process records: every process a script starts gets DIR/NAME.pid holding two
# lines, the PID and the absolute path of the binary. Stopping checks that the
# PID still runs that binary before signalling it, so a recycled PID belonging
# to something else is never touched; nothing is ever looked up or killed by
# name.

# The repository root, from this file's location (e2e/tools/lib.sh).
E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E_BIN=${E2E_BIN:-$E2E_ROOT/.bin}

e2e_log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
e2e_die() { e2e_log "error: $*"; exit 1; }

# Directories land verbatim in KEY=value env files that both `source` and
# simple KEY=value parsers (Go tests) read, so refuse anything that would need
# quoting.
e2e_check_path() {
	case $1 in
	*[!A-Za-z0-9_./+@:-]*) e2e_die "path '$1' has characters that would need quoting; use a plainer path" ;;
	esac
}

# e2e_free_ports N: prints N distinct TCP ports that nothing on this machine is
# bound to right now. Candidates come from 20000-32767, below Linux's default
# ephemeral range (32768-60999), so outgoing connections do not grab them
# between the pick and the bind. Another process can still take one first;
# callers that start servers retry on "address already in use".
e2e_free_ports() {
	local want=$1 local_addr port tries=0
	local -A used=()
	local -a picked=()
	for f in /proc/net/tcp /proc/net/tcp6; do
		[[ -r $f ]] || continue
		while read -r _ local_addr _; do
			[[ $local_addr == *:* ]] || continue
			used[$((16#${local_addr##*:}))]=1
		done <"$f"
	done
	while ((${#picked[@]} < want)); do
		((tries++ < 1000)) || e2e_die "could not find $want free ports"
		port=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
		[[ -z ${used[$port]:-} ]] || continue
		used[$port]=1
		picked+=("$port")
	done
	echo "${picked[@]}"
}

# e2e_http_ok HOST PORT PATH: true when a plain-HTTP GET answers 200. Uses
# bash's /dev/tcp so a fresh machine needs no curl.
e2e_http_ok() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 2 bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3
		IFS=" " read -r _ code _ <&3
		[[ $code == 200 ]]
	' _ "$1" "$2" "$3" 2>/dev/null
}

# e2e_alive PID: the process exists and is not a zombie (a zombie still
# answers kill -0 when its parent has not reaped it yet).
e2e_alive() {
	local state
	kill -0 "$1" 2>/dev/null || return 1
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ $state != Z ]]
}

# e2e_start NAME DIR BIN ARGS...: starts BIN in the background with its
# output in DIR/NAME.log and records DIR/NAME.pid. Sets E2E_STARTED_PID.
# stdin is /dev/null and stdout/stderr go to the log, so the process holds no
# pipe of the caller (a Go test reading our output does not hang on it).
e2e_start() {
	local name=$1 dir=$2 bin=$3
	shift 3
	"$bin" "$@" >"$dir/$name.log" 2>&1 </dev/null &
	E2E_STARTED_PID=$!
	# Record the binary with symlinks resolved: that is what /proc/PID/exe
	# shows, and e2e_is_ours compares the two.
	printf '%s\n%s\n' "$E2E_STARTED_PID" "$(readlink -f "$bin")" >"$dir/$name.pid"
}

# e2e_is_ours PIDFILE: the PID recorded there still runs the recorded binary.
e2e_is_ours() {
	local pid bin exe
	{ read -r pid && read -r bin; } <"$1" || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	e2e_alive "$pid" || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	# A binary rebuilt while it runs shows up as "PATH (deleted)".
	exe=${exe% (deleted)}
	[[ $exe == "$bin" ]]
}

# e2e_stop TIMEOUT PIDFILE...: TERM to each recorded process that is still
# ours, KILL to any still running TIMEOUT seconds later, then removes the pid
# files. Returns non-zero if a process survives KILL.
e2e_stop() {
	local timeout=$1 f pid deadline
	shift
	local -a stopping=()
	for f in "$@"; do
		[[ -f $f ]] || continue
		if e2e_is_ours "$f"; then
			pid=$(head -n1 "$f")
			e2e_log "stopping $(basename "$f" .pid) (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			stopping+=("$pid")
		fi
	done
	deadline=$((SECONDS + timeout))
	for pid in "${stopping[@]}"; do
		while e2e_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
	done
	local rc=0
	for pid in "${stopping[@]}"; do
		if e2e_alive "$pid"; then
			e2e_log "pid $pid ignored TERM for ${timeout}s; sending KILL"
			kill -KILL "$pid" 2>/dev/null || true
			for _ in $(seq 50); do e2e_alive "$pid" || break; sleep 0.1; done
			if e2e_alive "$pid"; then
				e2e_log "pid $pid survived KILL"
				rc=1
			fi
		fi
	done
	((rc == 0)) && rm -f -- "$@"
	return $rc
}

# e2e_usage prints the calling script's header comment (its usage) and exits 0.
e2e_usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit 0
}
