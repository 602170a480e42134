#!/bin/bash
# Builds the hapg member image (kubernetes/Containerfile) with docker where no
# registry can be reached: the base is a Debian bookworm root filesystem made
# with debootstrap from the machine's Debian mirror and imported with
# `docker import`; the Containerfile is built FROM it (--build-arg BASE=...).
#
#   scripts/build-image.sh [TAG]     build (default hapg:1.0); prints the tag
#   scripts/build-image.sh base      make or reuse the base image only; prints its tag
#
# The base is cached outside the repository, in $HAPG_IMAGE_CACHE (default
# /var/cache/hapg-image): the root filesystem's tarball, and the imported
# image hapg-base:bookworm in docker. A second run reuses both; delete the
# tarball and `docker rmi hapg-base:bookworm` to start over.
# HAPG_DEBIAN_MIRROR overrides the mirror (default: the one apt uses here).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${HAPG_IMAGE_CACHE:-/var/cache/hapg-image}
BASE_TAG=${HAPG_BASE_IMAGE:-hapg-base:bookworm}
MIRROR=${HAPG_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${HAPG_DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}

die() { echo "build-image: $*" >&2; exit 1; }
log() { echo "build-image: $(date -u +%H:%M:%S) $*" >&2; }

# Makes the bookworm root filesystem tarball with debootstrap (minbase), with
# the same suites as the host (bookworm, -updates, -security) so its packages
# are the versions the tests use.
make_rootfs_tar() {
	local tar=$1 root
	command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap; scripts/deps.sh installs it)"
	root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
	log "debootstrap bookworm from $MIRROR into $root"
	if ! debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
		rm -rf "$root"
		die "debootstrap failed; see $CACHE/debootstrap.log"
	fi
	cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
	# The mirror here may be a dated snapshot: accept its Release files' dates.
	if [ -f /etc/apt/apt.conf.d/99artifact-registry ]; then
		cp /etc/apt/apt.conf.d/99artifact-registry "$root/etc/apt/apt.conf.d/"
	fi
	# As the public image: no apt caches or package lists kept.
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
	tar --numeric-owner -C "$root" -cf "$tar.new" .
	mv "$tar.new" "$tar"
	rm -rf "$root"
}

# Makes or reuses the base image; prints its tag.
cmd_base() {
	mkdir -p "$CACHE"
	if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
		log "reusing base image $BASE_TAG"
	else
		local tar=$CACHE/bookworm-minbase.tar
		[ -f "$tar" ] || make_rootfs_tar "$tar"
		log "docker import $tar as $BASE_TAG"
		docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' "$tar" "$BASE_TAG" >/dev/null
	fi
	echo "$BASE_TAG"
}

cmd_build() {
	local tag=${1:-hapg:1.0} base
	base=$(cmd_base)
	log "docker build -f kubernetes/Containerfile --build-arg BASE=$base -t $tag"
	docker build -f "$REPO/kubernetes/Containerfile" --build-arg "BASE=$base" -t "$tag" "$REPO" >&2 ||
		die "docker build failed"
	log "built $tag"
	echo "$tag"
}

command -v docker >/dev/null || die "docker is missing"
case ${1:-} in
base) cmd_base ;;
-h | --help) sed -n '2,15p' "$0" >&2 ;;
*) cmd_build "$@" ;;
esac
