#!/bin/bash
# PID 1 of an e2e node container (tests/e2e/cluster.sh starts them).
#
#   NODE_ROLE=control-plane  etcd, kube-apiserver, kube-controller-manager,
#                            kube-scheduler, and kube-proxy (so that the drills'
#                            writer, run here, reaches Services by ClusterIP)
#   NODE_ROLE=worker         containerd (CRI), kubelet, kube-proxy
#
# The Kubernetes binaries are mounted at /opt/kube/bin, the certificates and
# kubeconfigs at /etc/kubernetes (both read-only). NODE_IP is this container's
# address on the cluster's Docker network, POD_CIDR its Pods' subnet (worker),
# ROUTES "cidr=via cidr=via ..." the other nodes' Pod subnets.
# On SIGTERM it stops what it started and exits, so `docker stop` takes the
# whole node down (every process of its PID namespace) at once.
set -u
KB=/opt/kube/bin
PKI=/etc/kubernetes/pki
LOG=/var/log/hapg-node
mkdir -p "$LOG"

say() { echo "node-entrypoint: $(date -u +%H:%M:%S.%N | cut -c1-12) $*"; }

# cgroup v1 (this host): Docker mounts this container's own cgroup at
# /sys/fs/cgroup/<controller>, read-only, while /proc/self/cgroup names its
# host path /docker/<id>. Make the mounts writable and make that path resolve
# too (bind the subtree onto it), so kubelet, cAdvisor and runc, which join
# the two, find their cgroups; Pods' cgroups then nest under this container's,
# and `docker pause` freezes them with it.
fix_cgroups() {
	local line ctrls path dir
	mount -o remount,rw /sys 2>/dev/null || true
	while IFS= read -r line; do
		ctrls=${line#*:}
		path=${ctrls#*:}
		ctrls=${ctrls%%:*}
		[ -n "$ctrls" ] || continue
		dir=/sys/fs/cgroup/${ctrls#name=}
		[ -d "$dir" ] || continue
		mount -o remount,rw,bind "$dir" 2>/dev/null || mount -o remount,rw "$dir" || say "cannot remount $dir rw"
		if [ "$path" != / ] && [ ! -d "$dir$path/cgroup.procs" ] && ! mountpoint -q "$dir$path"; then
			mkdir -p "$dir$path"
			mount --bind "$dir" "$dir$path"
		fi
	done </proc/self/cgroup
}

setup_network() {
	local r
	sysctl -qw net.ipv4.ip_forward=1
	sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || say "no bridge-nf-call-iptables here"
	sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
	add_routes
}

# The other nodes' Pod subnets, through their addresses (host-gw routing).
add_routes() {
	local r
	for r in ${ROUTES:-}; do
		ip route replace "${r%%=*}" via "${r#*=}" 2>/dev/null
	done
}

# Puts the routes back when the link returns (a `docker network disconnect`
# and connect gives the node a new eth0, without them), as a routing daemon would.
keep_routes() {
	local i
	for ((i = 0; i < 1000000; i++)); do
		add_routes
		sleep 1
	done
}

PIDS=()
# Runs "$@" under a bounded restart loop in the background, logging to $LOG/$1.log.
supervise() {
	local name=$1
	shift
	(
		for ((n = 0; n < 500; n++)); do
			"$@" >>"$LOG/$name.log" 2>&1
			echo "node-entrypoint: $name exited ($?), restarting" >>"$LOG/$name.log"
			sleep 2
		done
	) &
	PIDS+=($!)
	say "started $name"
}

stop_all() {
	say "stopping"
	kill -TERM "${PIDS[@]}" 2>/dev/null
	pkill -TERM -P $$ 2>/dev/null
	exit 0
}
trap stop_all TERM INT

kube_proxy() {
	cat >/run/kube-proxy.yaml <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /etc/kubernetes/kube-proxy.kubeconfig
hostnameOverride: $(hostname)
bindAddress: 0.0.0.0
clusterCIDR: 10.244.0.0/16
mode: iptables
# nf_conntrack_max is the host's, not this container's, to set
conntrack:
  maxPerCore: 0
metricsBindAddress: 127.0.0.1:10249
EOF
	supervise kube-proxy "$KB/kube-proxy" --config /run/kube-proxy.yaml
}

control_plane() {
	mkdir -p /var/lib/etcd
	supervise etcd "$KB/etcd" --name cp --data-dir /var/lib/etcd \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster cp=http://127.0.0.1:2380 --quota-backend-bytes 2147483648 --log-level warn
	supervise kube-apiserver "$KB/kube-apiserver" \
		--bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port 6443 \
		--etcd-servers http://127.0.0.1:2379 \
		--tls-cert-file $PKI/apiserver.crt --tls-private-key-file $PKI/apiserver.key \
		--client-ca-file $PKI/ca.crt \
		--kubelet-client-certificate $PKI/apiserver-kubelet-client.crt \
		--kubelet-client-key $PKI/apiserver-kubelet-client.key \
		--service-account-key-file $PKI/sa.pub --service-account-signing-key-file $PKI/sa.key \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
		--profiling=false
	supervise kube-controller-manager "$KB/kube-controller-manager" \
		--kubeconfig /etc/kubernetes/controller-manager.kubeconfig \
		--authentication-kubeconfig /etc/kubernetes/controller-manager.kubeconfig \
		--authorization-kubeconfig /etc/kubernetes/controller-manager.kubeconfig \
		--bind-address 127.0.0.1 --leader-elect=false \
		--service-account-private-key-file $PKI/sa.key --root-ca-file $PKI/ca.crt \
		--use-service-account-credentials --controllers '*' \
		--cluster-signing-cert-file $PKI/ca.crt --cluster-signing-key-file $PKI/ca.key
	supervise kube-scheduler "$KB/kube-scheduler" \
		--kubeconfig /etc/kubernetes/scheduler.kubeconfig \
		--authentication-kubeconfig /etc/kubernetes/scheduler.kubeconfig \
		--authorization-kubeconfig /etc/kubernetes/scheduler.kubeconfig \
		--bind-address 127.0.0.1 --leader-elect=false
	kube_proxy
}

worker() {
	local name
	name=$(hostname)
	mkdir -p /etc/cni/net.d /etc/containerd /var/lib/kubelet /var/local-pv/a /var/local-pv/b
	cat >/etc/cni/net.d/10-hapg.conflist <<EOF
{
  "cniVersion": "1.0.0",
  "name": "hapg-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
	# Debian's containerd 1.6; its CRI plugin with the pause image this cluster
	# built; the OOM score no lower than containerd's own (this node lacks
	# CAP_SYS_RESOURCE, which lowering it needs); overlayfs on /var (a volume).
	cat >/etc/containerd/config.toml <<'EOF'
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "hapg.local/pause:3.10.2"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
EOF
	supervise containerd containerd --config /etc/containerd/config.toml
	for ((i = 0; i < 100; i++)); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done
	cat >/var/lib/kubelet/config.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1 (Docker 20.10, cgroupfs); kubelet ${KUBE_RELEASE:-} refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
failSwapOn: false
resolvConf: /etc/resolv.conf
# The disk is the host's, shared with other work: no disk-pressure evictions.
evictionHard: {memory.available: "100Mi"}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
EOF
	supervise kubelet "$KB/kubelet" --config /var/lib/kubelet/config.yaml \
		--kubeconfig "/etc/kubernetes/kubelet-$name.kubeconfig" \
		--hostname-override "$name" --node-ip "$NODE_IP" --v=1
	kube_proxy
}

say "role ${NODE_ROLE:?} ip ${NODE_IP:?}"
mount --make-rshared /
fix_cgroups
setup_network
supervise routes keep_routes
case $NODE_ROLE in
control-plane) control_plane ;;
worker) worker ;;
*) say "unknown NODE_ROLE $NODE_ROLE"; exit 2 ;;
esac
# Wait for SIGTERM (docker stop); `wait` returns early on a signal, then the trap runs.
while :; do wait; sleep 1; done
