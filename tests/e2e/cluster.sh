#!/bin/bash
# A real Kubernetes cluster in Docker containers for hapg's end-to-end drills:
# one control-plane container (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy) and $HAPG_E2E_WORKERS (default 3) worker
# containers, each running Debian's containerd (CRI) and runc, the CNI bridge
# plugin, and a real kubelet and kube-proxy. Every Kubernetes binary is built
# from k8s.io/kubernetes by scripts/kube-control-plane.sh (cached outside the
# repository); the pause image is built from k8s.io/kubernetes' build/pause.
#
#   tests/e2e/cluster.sh up        build or reuse everything, start the cluster;
#                                  prints KUBECONFIG=...
#   tests/e2e/cluster.sh down      remove the containers (by id), their volumes, the network
#   tests/e2e/cluster.sh status    docker ps of the nodes, kubectl get nodes
#   tests/e2e/cluster.sh load      (re)load the hapg image into every worker
#
# State (certificates, kubeconfigs, saved images) is in $HAPG_E2E_STATE
# (default /var/lib/hapg-e2e); a second `up` reuses the images, binaries and
# certificates, and starts a fresh cluster.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/tests/e2e
STATE=${HAPG_E2E_STATE:-/var/lib/hapg-e2e}
NAME=${HAPG_E2E_NAME:-hapg-e2e}
WORKERS=${HAPG_E2E_WORKERS:-3}
NET=$NAME
SUBNET_PREFIX=${HAPG_E2E_SUBNET_PREFIX:-172.30.99}
CP_IP=$SUBNET_PREFIX.10
HAPG_IMAGE=${HAPG_IMAGE:-hapg:1.0}
NODE_IMAGE=$NAME-node:1
PAUSE_IMAGE=hapg.local/pause:3.10.2
KUBECONFIG_FILE=$STATE/admin.kubeconfig

die() { echo "cluster: $*" >&2; exit 1; }
log() { echo "cluster: $(date -u +%H:%M:%S) $*" >&2; }

worker_name() { echo "$NAME-w$1"; }
worker_ip() { echo "$SUBNET_PREFIX.$((10 + $1))"; }
pod_cidr() { echo "10.244.$1.0/24"; }

# The Kubernetes binaries: HAPG_KUBE_BIN, else scripts/kube-control-plane.sh's build (cached).
kube_bin() {
	if [ -n "${HAPG_KUBE_BIN:-}" ]; then
		echo "$HAPG_KUBE_BIN"
	elif [ -x "$REPO/scripts/kube-control-plane.sh" ] || [ -f "$REPO/scripts/kube-control-plane.sh" ]; then
		bash "$REPO/scripts/kube-control-plane.sh" build
	else
		die "no scripts/kube-control-plane.sh (issue 13's build): set HAPG_KUBE_BIN to a directory with kubelet, kube-proxy, ..."
	fi
}

kubectl() { "$KUBE_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# Builds the node image FROM the debootstrap base (scripts/build-image.sh base).
build_node_image() {
	local base
	base=$(bash "$REPO/scripts/build-image.sh" base)
	docker build -q -f "$HERE/node.Containerfile" --build-arg "BASE=$base" -t "$NODE_IMAGE" "$HERE" >/dev/null ||
		die "building $NODE_IMAGE failed"
}

# The pause image: k8s.io/kubernetes' build/pause/linux/pause.c compiled
# statically, alone in an image made with docker import; saved for ctr import.
build_pause() {
	local src tag=${PAUSE_IMAGE##*:} d
	[ -f "$STATE/pause.tar" ] && docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return
	src=$(/usr/local/go/bin/go env GOMODCACHE 2>/dev/null)/k8s.io/kubernetes@$KUBE_RELEASE/build/pause/linux/pause.c
	[ -f "$src" ] || src=$(ls /var/cache/hapg-kube/modcache/k8s.io/kubernetes@"$KUBE_RELEASE"/build/pause/linux/pause.c 2>/dev/null || true)
	[ -f "$src" ] || die "pause.c of k8s.io/kubernetes@$KUBE_RELEASE not in the module cache (run scripts/kube-control-plane.sh build)"
	d=$(mktemp -d)
	gcc -Os -Wall -static -DVERSION="v$tag-hapg" -o "$d/pause" "$src"
	strip "$d/pause"
	tar -C "$d" -cf "$d/rootfs.tar" pause
	docker import --change 'ENTRYPOINT ["/pause"]' --change 'USER 65535:65535' "$d/rootfs.tar" "$PAUSE_IMAGE" >/dev/null
	docker save -o "$STATE/pause.tar" "$PAUSE_IMAGE"
	rm -rf "$d"
}

# Saves the hapg image for ctr import, again only when its id changed.
save_hapg_image() {
	local id
	id=$(docker image inspect -f '{{.Id}}' "$HAPG_IMAGE" 2>/dev/null) ||
		die "no image $HAPG_IMAGE: run scripts/build-image.sh first"
	if [ "$(cat "$STATE/hapg.tar.id" 2>/dev/null)" != "$id" ]; then
		docker save -o "$STATE/hapg.tar" "$HAPG_IMAGE"
		echo "$id" >"$STATE/hapg.tar.id"
	fi
}

# One certificate signed by the cluster's CA: $1 file stem, $2 subject, $3 extensions.
cert() {
	openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
	printf '%b' "$3" >"$PKI/$1.ext"
	openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 30 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
	rm -f "$PKI/$1.csr" "$PKI/$1.ext"
}

# A kubeconfig for one client certificate: $1 file, $2 cert stem, $3 server, $4 pki dir as seen by its user.
kubeconfig() {
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $NAME
  cluster: {server: "$3", certificate-authority: "$4/ca.crt"}
users:
- name: u
  user: {client-certificate: "$4/$2.crt", client-key: "$4/$2.key"}
contexts:
- name: $NAME
  context: {cluster: $NAME, user: u, namespace: default}
current-context: $NAME
EOF
}

make_pki() {
	local i n client='extendedKeyUsage=clientAuth\n'
	PKI=$STATE/etc/pki
	[ -f "$PKI/.done-$WORKERS" ] && return
	mkdir -p "$PKI"
	[ -f "$PKI/ca.crt" ] || openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$NAME-ca" \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
	cert apiserver "/CN=kube-apiserver" \
		"subjectAltName=IP:$CP_IP,IP:127.0.0.1,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n"
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
	cert admin "/O=system:masters/CN=hapg-e2e-admin" "$client"
	cert controller-manager "/CN=system:kube-controller-manager" "$client"
	cert scheduler "/CN=system:kube-scheduler" "$client"
	cert kube-proxy "/CN=system:kube-proxy" "$client"
	[ -f "$PKI/sa.key" ] || { openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null; openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null; }
	local in=https://$CP_IP:6443 ipki=/etc/kubernetes/pki
	kubeconfig "$STATE/etc/controller-manager.kubeconfig" controller-manager https://127.0.0.1:6443 $ipki
	kubeconfig "$STATE/etc/scheduler.kubeconfig" scheduler https://127.0.0.1:6443 $ipki
	kubeconfig "$STATE/etc/kube-proxy.kubeconfig" kube-proxy "$in" $ipki
	for ((i = 1; i <= WORKERS; i++)); do
		n=$(worker_name $i)
		cert "kubelet-$n" "/O=system:nodes/CN=system:node:$n" "$client"
		kubeconfig "$STATE/etc/kubelet-$n.kubeconfig" "kubelet-$n" "$in" $ipki
	done
	kubeconfig "$KUBECONFIG_FILE" admin "$in" "$PKI"
	chmod -R go-rwx "$PKI"
	touch "$PKI/.done-$WORKERS"
}

# docker run of one node: $1 name, $2 ip, $3 role, $4 pod CIDR (workers).
run_node() {
	local name=$1 ip=$2 role=$3 cidr=${4:-} routes="" j
	for ((j = 1; j <= WORKERS; j++)); do
		[ "$(pod_cidr $j)" = "$cidr" ] || routes="$routes $(pod_cidr $j)=$(worker_ip $j)"
	done
	# --privileged is refused here (the Docker daemon's capability bounding set
	# lacks CAP_SYS_RESOURCE): every other capability, no seccomp or AppArmor
	# profile, unmasked /proc and /sys, every device allowed: privileged in all but that.
	docker run -d --name "$name" --hostname "$name" --network "$NET" --ip "$ip" \
		--label hapg-e2e="$NAME" \
		--cap-add ALL --cap-drop SYS_RESOURCE \
		--security-opt seccomp=unconfined --security-opt apparmor=unconfined \
		--security-opt systempaths=unconfined --device-cgroup-rule 'a *:* rwm' \
		--device /dev/kmsg \
		--tmpfs /run:rw,exec,nosuid,size=256m --tmpfs /tmp:rw,exec,size=256m \
		-v "$name-var:/var" -v "$KUBE_BIN:/opt/kube/bin:ro" -v "$STATE/etc:/etc/kubernetes:ro" \
		-v "$HERE:/e2e:ro" -v "$STATE/run:/state" -v /lib/modules:/lib/modules:ro \
		-e NODE_ROLE="$role" -e NODE_IP="$ip" -e POD_CIDR="$cidr" -e ROUTES="$routes" \
		-e KUBE_RELEASE="$KUBE_RELEASE" \
		"$NODE_IMAGE" >"$STATE/ids/$name"
}

# Waits up to $2 s for the command $1.
wait_for() {
	local i
	for ((i = 0; i < $2; i++)); do
		if eval "$1" >/dev/null 2>&1; then return 0; fi
		sleep 1
	done
	return 1
}

# Imports the pause and hapg images into worker $1's containerd (k8s.io namespace).
load_images() {
	local n=$1
	wait_for "docker exec $n ctr -n k8s.io version" 60 || die "containerd on $n did not start: docker exec $n cat /var/log/hapg-node/containerd.log"
	docker exec -i "$n" ctr -n k8s.io images import --all-platforms - <"$STATE/pause.tar" >/dev/null
	docker exec -i "$n" ctr -n k8s.io images import --all-platforms - <"$STATE/hapg.tar" >/dev/null
}

# Static local PersistentVolumes (two per worker) and their StorageClass, the default.
apply_storage() {
	local i n l
	{
		cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
EOF
		for ((i = 1; i <= WORKERS; i++)); do
			n=$(worker_name $i)
			for l in a b; do
				cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: $n-$l}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: /var/local-pv/$l}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$n]}
EOF
			done
		done
	} | kubectl apply -f - >/dev/null
}

cmd_up() {
	local t0 i n
	t0=$(date +%s)
	mkdir -p "$STATE/ids" "$STATE/run" "$STATE/etc"
	KUBE_BIN=$(kube_bin)
	log "binaries: $KUBE_BIN"
	build_node_image
	build_pause
	save_hapg_image
	make_pki
	docker network inspect "$NET" >/dev/null 2>&1 ||
		docker network create --subnet "$SUBNET_PREFIX.0/24" --label hapg-e2e="$NAME" "$NET" >/dev/null
	docker container inspect "$NAME-cp" >/dev/null 2>&1 || run_node "$NAME-cp" "$CP_IP" control-plane
	for ((i = 1; i <= WORKERS; i++)); do
		n=$(worker_name $i)
		docker container inspect "$n" >/dev/null 2>&1 || run_node "$n" "$(worker_ip $i)" worker "$(pod_cidr $i)"
	done
	wait_for "kubectl get --raw /readyz" 120 || die "kube-apiserver not ready: docker exec $NAME-cp cat /var/log/hapg-node/kube-apiserver.log"
	log "kube-apiserver ready after $(($(date +%s) - t0)) s"
	for ((i = 1; i <= WORKERS; i++)); do load_images "$(worker_name $i)" & done
	wait
	apply_storage
	wait_for "[ \$(kubectl get nodes --no-headers 2>/dev/null | grep -cw Ready) -ge $WORKERS ]" 180 ||
		{ kubectl get nodes >&2; die "nodes not Ready"; }
	log "cluster up in $(($(date +%s) - t0)) s"
	echo "KUBECONFIG=$KUBECONFIG_FILE"
	echo "KUBE_BIN=$KUBE_BIN"
}

cmd_down() {
	local f id
	for f in "$STATE"/ids/*; do
		[ -f "$f" ] || continue
		id=$(cat "$f")
		docker rm -f -v "$id" >/dev/null 2>&1 || true
		docker volume rm "$(basename "$f")-var" >/dev/null 2>&1 || true
		rm -f "$f"
	done
	docker network rm "$NET" >/dev/null 2>&1 || true
	log "down"
}

cmd_load() {
	local i
	KUBE_BIN=$(kube_bin)
	save_hapg_image
	for ((i = 1; i <= WORKERS; i++)); do load_images "$(worker_name $i)"; done
}

# The release scripts/kube-control-plane.sh builds (its pause.c is used here too).
if [ -z "${KUBE_RELEASE:-}" ] && [ -f "$REPO/scripts/kube-control-plane.sh" ]; then
	KUBE_RELEASE=$(bash "$REPO/scripts/kube-control-plane.sh" env | sed -n 's/^KUBE_RELEASE=//p')
fi
KUBE_RELEASE=${KUBE_RELEASE:-v1.37.2}
case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
load) cmd_load ;;
status)
	KUBE_BIN=$(kube_bin)
	docker ps -a --filter label=hapg-e2e="$NAME"
	kubectl get nodes -o wide
	;;
*) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
