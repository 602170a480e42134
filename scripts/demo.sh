#!/bin/bash
# hapg demo: installs the dependencies, builds and installs the extension,
# starts the Kubernetes API double and a 3-member cluster (pg-0 primary,
# pg-1/pg-2 streaming standbys) and leaves it running.
#
#   scripts/demo.sh              start (profile 'default': ttl 30, loop_wait 10, retry_timeout 10)
#   scripts/demo.sh --fast       start with ttl 6, loop_wait 1, retry_timeout 2
#   scripts/demo.sh show         print members/status again
#   scripts/demo.sh stop         stop everything
#
# Files live in $HAPG_DEMO_DIR (default /tmp/hapg-demo).  Run as root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${HAPG_DEMO_DIR:-/tmp/hapg-demo}"
. "$ROOT/scripts/deps.sh"

cmd=start
profile=default
for a in "$@"; do
    case "$a" in
        start|stop|show) cmd="$a" ;;
        --fast) profile=fast ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

case "$cmd" in
    stop) exec "$HAPG_PY" "$ROOT/scripts/cluster.py" stop --dir "$DIR" ;;
    show) exec "$HAPG_PY" "$ROOT/scripts/cluster.py" show --dir "$DIR" ;;
esac

hapg_install_deps
echo "== building and installing hapg"
make -C "$ROOT" -s
make -C "$ROOT" -s install
for f in "$ROOT/apidouble/kubeapi.py" "$ROOT/apidouble/mkcerts.sh"; do
    [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }
done
echo "== starting the demo cluster"
"$HAPG_PY" "$ROOT/scripts/cluster.py" start --dir "$DIR" --profile "$profile"
echo
echo "The cluster keeps running. Stop it with: $ROOT/scripts/demo.sh stop"
