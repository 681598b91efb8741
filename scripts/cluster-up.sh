#!/usr/bin/env bash
# Starts a throwaway Kubernetes control plane (etcd + kube-apiserver) on
# 127.0.0.1 with a fresh PKI and ServiceAccount signing key.
#
#   scripts/cluster-up.sh [--anonymous-jwks] DIR
#
# DIR is created if needed. Outputs in DIR:
#   env             KEY=value lines (no quoting; `set -a; . DIR/env; set +a`):
#                   E2E_CLUSTER_DIR E2E_BIN KUBECONFIG KUBECTL
#                   KUBE_API_URL KUBE_API_PORT KUBE_ISSUER KUBE_JWKS_URL
#                   KUBE_OIDC_DISCOVERY_URL KUBE_API_AUDIENCES KUBE_CA_FILE
#                   KUBE_ADMIN_CERT KUBE_ADMIN_KEY KUBE_SA_KEY KUBE_SA_PUB
#                   KUBE_ANONYMOUS_JWKS ETCD_URL ETCD_PID APISERVER_PID
#   kubeconfig      admin (O=system:masters) client-certificate kubeconfig,
#                   credentials embedded
#   pki/            ca.crt ca.key, apiserver.crt/.key (SANs IP:127.0.0.1,
#                   DNS:localhost), admin.crt/.key (all ECDSA P-256), sa.key
#                   (PKCS#8 PEM RSA-2048 private key that signs ServiceAccount
#                   tokens, RS256; tests may forge tokens with it) and sa.pub
#                   (PKIX PEM public key)
#   etcd.log kube-apiserver.log, etcd.pid kube-apiserver.pid, etcd-data/
#
# The ServiceAccount issuer is https://127.0.0.1:PORT and the API audiences
# are that issuer and "nats". There is no controller-manager: no `default`
# ServiceAccounts, no pods; tests create the namespaces and ServiceAccounts
# they need. Like a real cluster, /openid/v1/jwks needs credentials (any
# ServiceAccount token or the admin cert); --anonymous-jwks binds
# system:service-account-issuer-discovery to system:unauthenticated so it can
# be fetched without any.
#
# Stop with scripts/cluster-down.sh DIR. Environment: E2E_BIN (binaries,
# default <repo>/.bin), E2E_SKIP_BUILD=1 (do not run build-tools.sh, just use
# the binaries in E2E_BIN), E2E_APISERVER_TIMEOUT (seconds to wait for
# /readyz, default 90).
set -euo pipefail

# shellcheck source=SCRIPTDIR/../e2e/tools/lib.sh
. "$(dirname "$0")/../e2e/tools/lib.sh"

anonymous_jwks=0
dir=
for arg in "$@"; do
	case $arg in
	--anonymous-jwks) anonymous_jwks=1 ;;
	-h | --help) e2e_usage ;;
	-*) e2e_die "unknown option $arg" ;;
	*)
		[[ -z $dir ]] || e2e_die "only one DIR, please"
		dir=$arg
		;;
	esac
done
[[ -n $dir ]] || e2e_die "usage: $0 [--anonymous-jwks] DIR"
t0=$SECONDS

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
e2e_check_path "$dir"

# Refuse to start a second control plane over a running one: its PID records
# would be overwritten and cluster-down could no longer stop it.
for f in "$dir/etcd.pid" "$dir/kube-apiserver.pid"; do
	if [[ -f $f ]] && e2e_is_ours "$f"; then
		e2e_die "$dir already has a running control plane; run scripts/cluster-down.sh $dir first"
	fi
done

if ! command -v openssl >/dev/null; then
	# The one system package the harness needs besides Go and bash.
	if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
		e2e_log "openssl is missing; installing it with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y openssl >&2
	else
		e2e_die "openssl is required"
	fi
fi

if [[ ${E2E_SKIP_BUILD:-0} != 1 ]]; then
	"$E2E_ROOT/scripts/build-tools.sh" etcd kube-apiserver kubectl
fi
[[ -d $E2E_BIN ]] || e2e_die "$E2E_BIN does not exist; run scripts/build-tools.sh"
E2E_BIN=$(cd "$E2E_BIN" && pwd) # absolute, for the env file
e2e_check_path "$E2E_BIN"
ETCD=$E2E_BIN/etcd APISERVER=$E2E_BIN/kube-apiserver KUBECTL=$E2E_BIN/kubectl
for b in "$ETCD" "$APISERVER" "$KUBECTL"; do
	[[ -x $b ]] || e2e_die "$b is missing; run scripts/build-tools.sh"
done

# Fresh state every time: only the files this script owns are removed, never
# DIR itself (it may be a directory the caller cares about).
pki=$dir/pki
rm -rf -- "$pki" "$dir/etcd-data"
rm -f -- "$dir/env" "$dir/kubeconfig" "$dir/etcd.log" "$dir/kube-apiserver.log"
mkdir -p "$pki"
chmod 700 "$pki"

# --- PKI -------------------------------------------------------------------
# One config file with a section per certificate profile, instead of -addext,
# so the same commands work on OpenSSL 1.1 and 3.x.
cat >"$pki/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
ssl() { openssl "$@" 2>>"$pki/openssl.log" || e2e_die "openssl $1 failed; see $pki/openssl.log"; }
# The TLS keys are ECDSA P-256: instant to generate, where each RSA key takes
# about a second on a busy 2-core machine. The ServiceAccount signing key is
# RSA 2048 (RS256), what a real cluster uses by default.
newkey() { ssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

ssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
ssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

newkey "$pki/ca.key"
ssl req -x509 -new -config "$pki/openssl.cnf" -extensions ca -key "$pki/ca.key" \
	-subj "/CN=nats-k8s-oidc-callout-e2e-ca" -days 365 -sha256 -out "$pki/ca.crt"

# signed NAME PROFILE SUBJECT: key + certificate signed by the CA.
signed() {
	newkey "$pki/$1.key"
	ssl req -new -config "$pki/openssl.cnf" -key "$pki/$1.key" -subj "$3" -out "$pki/$1.csr"
	ssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
		-CAcreateserial -CAserial "$pki/ca.srl" -days 365 -sha256 \
		-extfile "$pki/openssl.cnf" -extensions "$2" -out "$pki/$1.crt"
	rm -f "$pki/$1.csr"
}
signed apiserver server "/CN=kube-apiserver"
signed admin client "/O=system:masters/CN=e2e-admin"
chmod 600 "$pki"/*.key
e2e_log "PKI ready ($((SECONDS - t0))s)"

# --- etcd + kube-apiserver --------------------------------------------------
# start_all: picks free ports, starts both and waits until the API server is
# ready. Sets port_clash=1 instead if a picked port was taken between the pick
# and the bind (the caller retries with new ports). Called plainly, not in an
# `||` list, so that set -e stays in force inside it.
start_all() {
	local ports
	ports=$(e2e_free_ports 3)
	read -r etcd_port peer_port api_port <<<"$ports"
	etcd_url=http://127.0.0.1:$etcd_port
	peer_url=http://127.0.0.1:$peer_port
	api_url=https://127.0.0.1:$api_port
	rm -rf -- "$dir/etcd-data"

	# --unsafe-no-fsync: throwaway data, and fsync dominates etcd latency on
	# shared CI disks.
	e2e_start etcd "$dir" "$ETCD" \
		--name default --data-dir "$dir/etcd-data" \
		--listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
		--listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
		--initial-cluster "default=$peer_url" --initial-cluster-state new \
		--unsafe-no-fsync
	ETCD_PID=$E2E_STARTED_PID
	local deadline=$((SECONDS + 30))
	until e2e_http_ok 127.0.0.1 "$etcd_port" /health; do
		if ! e2e_alive "$ETCD_PID"; then
			if grep -q 'address already in use' "$dir/etcd.log"; then port_clash=1; return 0; fi
			tail -n 20 "$dir/etcd.log" >&2
			e2e_die "etcd exited; see $dir/etcd.log"
		fi
		((SECONDS < deadline)) || e2e_die "etcd not healthy after 30s; see $dir/etcd.log"
		sleep 0.1
	done
	e2e_log "etcd ready on $etcd_url (pid $ETCD_PID)"

	# The issuer is the API server's own URL, so its discovery document and
	# JWKS are served from where the issuer claim points, as in a real
	# cluster. "nats" is an accepted audience so `kubectl create token SA
	# --audience nats` tokens also pass TokenReview.
	e2e_start kube-apiserver "$dir" "$APISERVER" \
		--etcd-servers="$etcd_url" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
		--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" \
		--service-account-key-file="$pki/sa.pub" \
		--service-account-signing-key-file="$pki/sa.key" \
		--service-account-issuer="$api_url" \
		--service-account-jwks-uri="$api_url/openid/v1/jwks" \
		--api-audiences="$api_url,nats" \
		--authorization-mode=RBAC --anonymous-auth=true \
		--service-cluster-ip-range=10.0.0.0/24 \
		--endpoint-reconciler-type=none \
		--enable-priority-and-fairness=false
	APISERVER_PID=$E2E_STARTED_PID
	write_kubeconfig

	local timeout_s=${E2E_APISERVER_TIMEOUT:-90}
	deadline=$((SECONDS + timeout_s))
	until kc get --raw /readyz >/dev/null 2>&1; do
		if ! e2e_alive "$APISERVER_PID"; then
			if grep -q 'address already in use' "$dir/kube-apiserver.log"; then port_clash=1; return 0; fi
			tail -n 30 "$dir/kube-apiserver.log" >&2
			e2e_die "kube-apiserver exited; see $dir/kube-apiserver.log"
		fi
		if ((SECONDS >= deadline)); then
			kc get --raw '/readyz?verbose' >&2 || true
			e2e_die "kube-apiserver not ready after ${timeout_s}s; see $dir/kube-apiserver.log"
		fi
		sleep 0.2
	done
	e2e_log "kube-apiserver ready on $api_url (pid $APISERVER_PID)"
	return 0
}

write_kubeconfig() {
	b64() { openssl base64 -A -in "$1"; }
	cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $api_url
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: e2e-admin
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: e2e
  context:
    cluster: e2e
    user: e2e-admin
current-context: e2e
EOF
	chmod 600 "$dir/kubeconfig"
}

kc() { "$KUBECTL" --kubeconfig "$dir/kubeconfig" --request-timeout=5s "$@"; }

# If anything below fails, stop what was started: a half-up control plane
# with no env file would otherwise be left running.
cleanup_on_failure() {
	local rc=$?
	if ((rc != 0)); then
		e2e_log "cluster-up failed; stopping what it started"
		e2e_stop 5 "$dir/kube-apiserver.pid" "$dir/etcd.pid" || true
	fi
}
trap cleanup_on_failure EXIT

for attempt in 1 2 3; do
	port_clash=0
	start_all
	((port_clash)) || break
	e2e_log "a picked port was taken meanwhile; retrying with new ports"
	e2e_stop 5 "$dir/kube-apiserver.pid" "$dir/etcd.pid" || true
	((attempt < 3)) || e2e_die "could not bind free ports"
done

if ((anonymous_jwks)); then
	kc create clusterrolebinding e2e-anonymous-service-account-issuer-discovery \
		--clusterrole=system:service-account-issuer-discovery \
		--group=system:unauthenticated >/dev/null
	e2e_log "JWKS and OIDC discovery readable anonymously"
fi

cat >"$dir/env.tmp" <<EOF
E2E_CLUSTER_DIR=$dir
E2E_BIN=$E2E_BIN
KUBECONFIG=$dir/kubeconfig
KUBECTL=$KUBECTL
KUBE_API_URL=$api_url
KUBE_API_PORT=$api_port
KUBE_ISSUER=$api_url
KUBE_JWKS_URL=$api_url/openid/v1/jwks
KUBE_OIDC_DISCOVERY_URL=$api_url/.well-known/openid-configuration
KUBE_API_AUDIENCES=$api_url,nats
KUBE_CA_FILE=$pki/ca.crt
KUBE_ADMIN_CERT=$pki/admin.crt
KUBE_ADMIN_KEY=$pki/admin.key
KUBE_SA_KEY=$pki/sa.key
KUBE_SA_PUB=$pki/sa.pub
KUBE_ANONYMOUS_JWKS=$anonymous_jwks
ETCD_URL=$etcd_url
ETCD_PID=$ETCD_PID
APISERVER_PID=$APISERVER_PID
EOF
# Renamed into place last: a reader that sees DIR/env sees a ready cluster.
mv -f "$dir/env.tmp" "$dir/env"
e2e_log "control plane up in $((SECONDS - t0))s; env in $dir/env"
