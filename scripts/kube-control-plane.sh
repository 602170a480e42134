#!/bin/bash
# A real Kubernetes control plane on 127.0.0.1 for hapg's tests: etcd and
# kube-apiserver built once from the Go module proxy at one pinned release
# (tests/kube/tools/go.mod), real TLS, a service-account signing key, Node,RBAC
# authorization, the default admission plugins.
#
#   kube-control-plane.sh build           build or reuse the binaries; prints their directory
#   kube-control-plane.sh up DIR [PORT]   start etcd and kube-apiserver with state in DIR
#                                         (HAPG_KUBE_OWNER_PID: stopped when that process dies);
#                                         prints URL= and KUBECONFIG= lines
#   kube-control-plane.sh down DIR        stop what "up DIR" started (by pid)
#   kube-control-plane.sh env             prints KUBE_BIN= for the cache in use
#   kube-control-plane.sh kubectl         build or reuse, and link kubectl into /usr/local/bin
#                                         unless a kubectl is on PATH (scripts/deps.sh)
#
# The binaries live outside the repository, in $HAPG_KUBE_CACHE
# (default /var/cache/hapg-kube/<release>), and are rebuilt only when the
# tool module (go.mod, go.sum) changes. GOCACHE defaults to
# $HAPG_KUBE_CACHE/gocache so a build's cost is its own, not other projects'.
set -euo pipefail

# The one place the release is named (tests/kube/tools/go.mod requires the same).
KUBE_RELEASE=v1.37.2
REPO=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=$REPO/tests/kube/tools
CACHE=${HAPG_KUBE_CACHE:-/var/cache/hapg-kube/$KUBE_RELEASE}
BIN=$CACHE/bin
GO=${GO:-/usr/local/go/bin/go}
COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

die() { echo "kube-control-plane: $*" >&2; exit 1; }

# The stamp names the tool module's content: binaries built from another one are stale.
stamp() { cat "$TOOLS/go.mod" "$TOOLS/go.sum" | sha256sum | cut -c1-16; }

have_binaries() {
	[ -f "$BIN/.stamp" ] && [ "$(cat "$BIN/.stamp")" = "$(stamp)" ] || return 1
	for c in $COMMANDS etcd; do [ -x "$BIN/$c" ] || return 1; done
}

cmd_build() {
	if have_binaries; then
		echo "kube-control-plane: reusing $BIN ($KUBE_RELEASE)" >&2
		echo "$BIN"
		return
	fi
	grep -q "k8s.io/kubernetes $KUBE_RELEASE\$" "$TOOLS/go.mod" ||
		die "tests/kube/tools/go.mod does not require k8s.io/kubernetes $KUBE_RELEASE"
	mkdir -p "$CACHE"
	export GOCACHE=${GOCACHE_KUBE:-$CACHE/gocache}
	export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
	local out=$CACHE/bin.new ver=${KUBE_RELEASE#v} vpkg pkgs="" t0 t1
	rm -rf "$out"
	mkdir -p "$out"
	for c in $COMMANDS; do pkgs="$pkgs k8s.io/kubernetes/cmd/$c"; done
	# Version strings as a release build sets them (kubectl and /version read them).
	local ld="-s -w"
	for vpkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $vpkg.gitVersion=$KUBE_RELEASE -X $vpkg.gitMajor=${ver%%.*}"
		ld="$ld -X $vpkg.gitMinor=$(echo "$ver" | cut -d. -f2) -X $vpkg.gitTreeState=clean"
		ld="$ld -X $vpkg.buildDate=1970-01-01T00:00:00Z"
	done
	echo "kube-control-plane: building $KUBE_RELEASE into $BIN (GOCACHE=$GOCACHE, GOMODCACHE=$($GO env GOMODCACHE))" >&2
	t0=$(date +%s)
	# One go build for all of them: shared packages compile once. -p 2: the machine has 2 cores.
	(cd "$TOOLS" && CGO_ENABLED=0 $GO build -p "${KUBE_BUILD_P:-2}" -trimpath -ldflags "$ld" \
		-o "$out/" $pkgs go.etcd.io/etcd/server/v3) >&2
	mv "$out/server" "$out/etcd" 2>/dev/null || mv "$out/v3" "$out/etcd"
	t1=$(date +%s)
	stamp >"$out/.stamp"
	echo "$((t1 - t0))" >"$out/.build-seconds"
	rm -rf "$BIN"
	mv "$out" "$BIN"
	echo "kube-control-plane: built in $((t1 - t0)) s" >&2
	echo "$BIN"
}

# Waits up to $2 seconds for $1 (a command) to succeed; gives up early when
# its first word's process (kill -0 PID) is gone.
wait_for() {
	local i
	for ((i = 0; i < $2 * 5; i++)); do
		if eval "$1" >/dev/null 2>&1; then return 0; fi
		case $1 in "kill -0 "*) eval "${1%%&&*}" 2>/dev/null || return 1 ;; esac
		sleep 0.2
	done
	return 1
}

# Picks a free TCP port on 127.0.0.1.
free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cmd_up() {
	local dir=${1:?usage: up DIR [PORT]} port=${2:-} eport epeer
	have_binaries || die "no binaries in $BIN: run '$0 build' first"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	[ -n "$port" ] || port=$(free_port)
	eport=$(free_port)
	epeer=$(free_port)
	local pki=$dir/pki
	mkdir -p "$pki" "$dir/etcd"
	if [ ! -f "$pki/ca.crt" ]; then
		# A CA, the API server's serving certificate, an admin client certificate
		# (system:masters) and the service-account signing key.
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=hapg-test-ca" \
			-keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
			-keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' >"$pki/san.ext"
		openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
			-CAcreateserial -days 2 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=hapg-admin" \
			-keyout "$pki/admin.key" -out "$pki/admin.csr" 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
		openssl x509 -req -in "$pki/admin.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
			-CAcreateserial -days 2 -extfile "$pki/client.ext" -out "$pki/admin.crt" 2>/dev/null
		openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
		openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
	fi
	# Audit: every request of a ServiceAccount (the members), so the tests can
	# count requests per member, verb and resource, and see 403s, as the double's stats do.
	cat >"$dir/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [ResponseStarted]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
EOF
	"$BIN/etcd" --name hapg-test --data-dir "$dir/etcd" \
		--listen-client-urls "http://127.0.0.1:$eport" --advertise-client-urls "http://127.0.0.1:$eport" \
		--listen-peer-urls "http://127.0.0.1:$epeer" --initial-advertise-peer-urls "http://127.0.0.1:$epeer" \
		--initial-cluster "hapg-test=http://127.0.0.1:$epeer" \
		--quota-backend-bytes 1073741824 --log-level warn \
		>"$dir/etcd.log" 2>&1 &
	echo $! >"$dir/etcd.pid"
	wait_for "curl -sf http://127.0.0.1:$eport/health" 30 || { cmd_down "$dir"; die "etcd did not start: $dir/etcd.log"; }
	# --service-account-max-token-expiration and a short default: tokens from the
	# TokenRequest API expire within minutes, so a member re-reads its token file for real.
	"$BIN/kube-apiserver" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
		--endpoint-reconciler-type none \
		--etcd-servers "http://127.0.0.1:$eport" \
		--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
		--client-ca-file "$pki/ca.crt" \
		--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
		--service-account-issuer https://kubernetes.default.svc \
		--api-audiences https://kubernetes.default.svc \
		--service-account-max-token-expiration 24h \
		--authorization-mode Node,RBAC \
		--service-cluster-ip-range 10.96.0.0/16 \
		--allow-privileged=false \
		--storage-media-type application/json \
		--enable-priority-and-fairness=false \
		--profiling=false \
		--audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/audit.log" \
		--audit-log-mode blocking --audit-log-format json \
		>"$dir/apiserver.log" 2>&1 &
	echo $! >"$dir/apiserver.pid"
	cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hapg-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $pki/ca.crt
users:
- name: hapg-admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: hapg-test
  context: {cluster: hapg-test, user: hapg-admin, namespace: default}
current-context: hapg-test
EOF
	echo "https://127.0.0.1:$port" >"$dir/url"
	wait_for "kill -0 $(cat "$dir/apiserver.pid") && curl -sf --cacert $pki/ca.crt --cert $pki/admin.crt --key $pki/admin.key https://127.0.0.1:$port/readyz" 120 &&
		kill -0 "$(cat "$dir/apiserver.pid")" ||
		{ cmd_down "$dir"; die "kube-apiserver did not become ready: $dir/apiserver.log"; }
	if [ -n "${HAPG_KUBE_OWNER_PID:-}" ]; then
		# the owner (a test run) may be killed before it can say "down": then stop
		# what this started within ~2 s of its death
		(
			while kill -0 "$HAPG_KUBE_OWNER_PID" 2>/dev/null && [ -f "$dir/apiserver.pid" ]; do sleep 2; done
			cmd_down "$dir"
		) </dev/null >/dev/null 2>&1 &
		echo $! >"$dir/watchdog.pid"
	fi
	echo "URL=https://127.0.0.1:$port"
	echo "KUBECONFIG=$dir/kubeconfig"
	echo "CA=$pki/ca.crt"
}

# Stops a process by its pid file: TERM, then KILL after 10 s.
stop_pid() {
	local f=$1 pid i
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -CONT "$pid" 2>/dev/null || true
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

cmd_down() {
	local dir=${1:?usage: down DIR}
	stop_pid "$dir/apiserver.pid"
	stop_pid "$dir/etcd.pid"
}

case ${1:-} in
build) cmd_build ;;
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
kubectl)
	if command -v kubectl >/dev/null 2>&1; then
		echo "kube-control-plane: kubectl is $(command -v kubectl)" >&2
	else
		bin=$(cmd_build)
		ln -sf "$bin/kubectl" /usr/local/bin/kubectl
		echo "kube-control-plane: linked /usr/local/bin/kubectl -> $bin/kubectl" >&2
	fi
	;;
env) echo "KUBE_RELEASE=$KUBE_RELEASE"; echo "KUBE_BIN=$BIN" ;;
*) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
