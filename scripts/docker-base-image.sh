#!/usr/bin/env bash
# Build a Debian base image with python3 from Debian packages alone, for machines that reach
# Debian's mirrors and PyPI but no Docker image registry.
#   bash scripts/docker-base-image.sh [--rebuild] [NAME]      (NAME: summa-base:bookworm)
# Then:
#   docker build --network host --build-arg BASE_IMAGE=summa-base:bookworm -t summa-aggregation .
# Idempotent: does nothing when NAME exists, unless --rebuild. Installs debootstrap when it is
# missing, bootstraps a minbase bookworm with python3, python3-venv and ca-certificates from the
# mirror named in this machine's apt sources, and imports it. The image also gets this machine's
# apt sources (so apt-get works in builds) and its CA bundle (so pip does when HTTPS is
# intercepted). Needs root (debootstrap) and a running engine (scripts/start-docker.sh).
# $SUITE picks another Debian release (default bookworm). Prints NAME on stdout.
set -euo pipefail

PROG="docker-base-image.sh"
die() { echo "$PROG: error: $*" >&2; exit 1; }

REBUILD=0
NAME=""
for arg in "$@"; do
    case "$arg" in
        --rebuild) REBUILD=1 ;;
        -h|--help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
        -*) echo "$PROG: error: unknown option '$arg' (usage: $PROG [--rebuild] [NAME])" >&2; exit 2 ;;
        *) [ -z "$NAME" ] || { echo "$PROG: error: more than one NAME given" >&2; exit 2; }
           NAME="$arg" ;;
    esac
done
SUITE="${SUITE:-bookworm}"
NAME="${NAME:-summa-base:$SUITE}"

[ "$(id -u)" -eq 0 ] || die "run as root: debootstrap needs it"
docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/start-docker.sh first"

if [ "$REBUILD" -eq 0 ] && docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "$NAME"
    exit 0
fi

# The mirror: the first URIs: line of the deb822 sources, else the first deb line of sources.list.
SOURCES=""
MIRROR=""
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    MIRROR="$(awk '/^URIs:/ { print $2; exit }' "$f")"
    if [ -n "$MIRROR" ]; then SOURCES="$f"; break; fi
done
if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list ]; then
    MIRROR="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; exit } }' \
        /etc/apt/sources.list)"
    SOURCES=/etc/apt/sources.list
fi
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"

export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "$PROG: installing debootstrap" >&2
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends debootstrap >/dev/null \
        || die "apt-get install debootstrap failed"
fi

ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/summa-rootfs.XXXXXX")"
# Unmount anything debootstrap left mounted (it mounts /proc and /sys) before removing.
cleanup() {
    for m in proc sys dev/pts dev; do
        mountpoint -q "$ROOTFS/$m" 2>/dev/null && umount -l "$ROOTFS/$m" || true
    done
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

echo "$PROG: debootstrap $SUITE from $MIRROR" >&2
LOG="$(mktemp "${TMPDIR:-/tmp}/summa-debootstrap.XXXXXX.log")"
if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    die "debootstrap failed; full log: $LOG"
fi
rm -f "$LOG"

# apt inside the image: this machine's sources (debootstrap writes only the main suite).
if [ "$(basename "$SOURCES")" = "sources.list" ]; then
    cp "$SOURCES" "$ROOTFS/etc/apt/sources.list"
else
    cp "$SOURCES" "$ROOTFS/etc/apt/sources.list.d/debian.sources"
    rm -f "$ROOTFS/etc/apt/sources.list"
fi
# The host's CA bundle: on machines whose HTTPS goes through an intercepting proxy, it holds the
# proxy's CA, which Debian's ca-certificates package does not.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
fi
# Slim the image: no package lists, caches or docs (apt-get update refills the lists).
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/usr/share/doc/* \
       "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/debootstrap
# Hostname and resolv.conf come from the engine at run time.
: >"$ROOTFS/etc/hostname"
rm -f "$ROOTFS/etc/resolv.conf"

tar --numeric-owner -C "$ROOTFS" -c . \
    | docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/bin/bash"]' \
        - "$NAME" >/dev/null \
    || die "docker import failed"
echo "$NAME"
