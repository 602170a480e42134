#!/bin/bash
# Installs what hapg needs to build, test and demo on Debian 12 (as root).
# Sourced by scripts/demo.sh and scripts/test.sh; runs apt-get only when a
# package is missing (clang and libclang-rt-14-dev: the libFuzzer targets in
# tests/fuzz).  kubectl is not in Debian 12: when none is on PATH it
# is built with the control plane of the real-server tests (Go at
# /usr/local/go, the Go module proxy; scripts/kube-control-plane.sh, cached
# in /var/cache/hapg-kube) and linked into /usr/local/bin.
# iptables: the fault campaign (bench/chaos.py) partitions members with it.
# libkrb5-dev: PostgreSQL's libpq/libpq-be.h (the client connection, src/commitguard.c) includes gssapi.h
HAPG_DEBS=(postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libjson-c-dev
           pkg-config make gcc python3 python3-psycopg2 python3-pytest patroni openssl
           procps python3-yaml iproute2 libkrb5-dev libmicrohttpd-dev haproxy prometheus
           clang libclang-rt-14-dev curl iptables)
# The end-to-end tier (scripts/e2e.sh): Debian's Docker (the image build and the
# cluster's node containers) and debootstrap (the image's base, no registry needed).
HAPG_E2E_DEBS=(docker.io debootstrap)

hapg_install_deps() {
    if [ "$(id -u)" != 0 ]; then
        echo "hapg: run this as root (it installs packages and runs PostgreSQL as user postgres)" >&2
        return 1
    fi
    local missing=() p
    for p in "${HAPG_DEBS[@]}" ${HAPG_WITH_E2E:+"${HAPG_E2E_DEBS[@]}"}; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "hapg: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q || return 1
        apt-get install -y -q --no-install-recommends "${missing[@]}" || return 1
    else
        echo "hapg: build/test packages already installed"
    fi
    # the Debian package starts a default cluster on 5432; it is not used here
    if ! command -v kubectl >/dev/null 2>&1; then
        echo "hapg: kubectl is not installed (it is not in Debian 12): building it (scripts/kube-control-plane.sh)"
        bash "$(dirname "${BASH_SOURCE[0]}")/kube-control-plane.sh" kubectl ||
            echo "hapg: NOTE: no kubectl: tests/double's kubectl checks need it" >&2
    fi
    if ! id postgres >/dev/null 2>&1; then
        echo "hapg: user postgres is missing (postgresql-15 should have created it)" >&2
        return 1
    fi
    return 0
}

# /usr/bin/python3 is Debian's (with psycopg2 and pytest)
export HAPG_PY=/usr/bin/python3
