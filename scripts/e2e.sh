#!/bin/bash
# hapg end to end on a real Kubernetes cluster (as root, on a machine with docker):
# builds the image (scripts/build-image.sh), brings up the cluster of
# tests/e2e/cluster.sh, deploys as the README says (the Secret, then
# `kubectl apply -k kubernetes/`), waits for one primary and two streaming
# replicas on three nodes, and runs the drills (tests/e2e/drills.py), which
# print a table and "N passed, N failed".
#
#   scripts/e2e.sh [--keep] [--only drill,drill]   (default: every drill)
#   scripts/e2e.sh down                            tear the cluster down
#
# --keep leaves the cluster running afterwards (KUBECONFIG printed);
# otherwise it is torn down, and a later run starts a fresh one, reusing the
# built binaries and images.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
KEEP=0
ONLY=""
while [ $# -gt 0 ]; do
	case $1 in
	--keep) KEEP=1 ;;
	--only) ONLY=$2; shift ;;
	down) exec bash "$REPO/tests/e2e/cluster.sh" down ;;
	*) sed -n '2,14p' "$0" >&2; exit 2 ;;
	esac
	shift
done
say() { echo "e2e: $(date -u +%H:%M:%S) $*" >&2; }

t0=$(date +%s)
bash "$REPO/scripts/build-image.sh" hapg:1.0 >/dev/null
t1=$(date +%s)
say "image hapg:1.0 in $((t1 - t0)) s"
up=$(bash "$REPO/tests/e2e/cluster.sh" up) || { say "the cluster did not come up"; bash "$REPO/tests/e2e/cluster.sh" down; exit 1; }
eval "$(grep -E '^(KUBECONFIG|KUBE_BIN)=' <<<"$up")"
export KUBECONFIG KUBE_BIN
t2=$(date +%s)
say "cluster up in $((t2 - t1)) s"
[ $KEEP = 1 ] || trap 'bash "$REPO/tests/e2e/cluster.sh" down' EXIT
kubectl() { "$KUBE_BIN/kubectl" "$@"; }

# Deploy as the README says: the Secret with generated passwords, then the kustomization.
if ! kubectl get secret pg-secrets >/dev/null 2>&1; then
	kubectl create secret generic pg-secrets \
		--from-literal=superuser-password="$(openssl rand -base64 24)" \
		--from-literal=replication-password="$(openssl rand -base64 24)" \
		--from-literal=app-username=app \
		--from-literal=app-password="$(openssl rand -base64 24)" \
		--from-literal=app-database=app >/dev/null
fi
kubectl apply -k "$REPO/kubernetes/" >/dev/null
/usr/bin/python3 -c "
import sys; sys.path.insert(0, '$REPO/tests/e2e')
import drills, time
t = time.time()
leader = drills.wait_healthy(timeout=300)
nodes = sorted(set(drills.node_of(p) for p in drills.pods()))
print('e2e: deployed: leader %s, members on %d nodes %s, healthy %.0f s after apply' % (leader, len(nodes), nodes, time.time() - t))
"
t3=$(date +%s)
say "deployed in $((t3 - t2)) s"
rc=0
/usr/bin/python3 "$REPO/tests/e2e/drills.py" ${ONLY:+--only "$ONLY"} || rc=$?
say "drills in $(($(date +%s) - t3)) s; total $(($(date +%s) - t0)) s"
if [ $KEEP = 1 ]; then
	echo "KUBECONFIG=$KUBECONFIG"
	echo "kubectl: $KUBE_BIN/kubectl"
fi
exit $rc
