#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine; start one if not.
#   bash scripts/start-docker.sh [--swarm]
# Idempotent: installs Debian's docker.io when dockerd is missing, starts
#   dockerd --bridge=none --iptables=false
# in the background when `docker info` fails (log: $DOCKERD_LOG, default /var/log/dockerd.log),
# and waits up to $DOCKER_START_TIMEOUT seconds (default 60) for it to answer.
# With no bridge, containers and builds use the host network:
#   docker build --network host ...   docker run --network host ...
# --swarm also makes this engine a single-node swarm manager (advertised on 127.0.0.1).
# Needs root (or sudo). Every failure is one line on stderr and a non-zero exit.
set -euo pipefail

PROG="start-docker.sh"
die() { echo "$PROG: error: $*" >&2; exit 1; }

SWARM=0
for arg in "$@"; do
    case "$arg" in
        --swarm) SWARM=1 ;;
        -h|--help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "$PROG: error: unknown argument '$arg' (usage: $PROG [--swarm])" >&2; exit 2 ;;
    esac
done

LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
TIMEOUT="${DOCKER_START_TIMEOUT:-60}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install or start dockerd"
    SUDO=(sudo)
fi

# 1. The engine (and the client that comes with it).
if ! command -v dockerd >/dev/null 2>&1; then
    echo "$PROG: installing docker.io" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q >/dev/null || die "apt-get update failed"
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends docker.io >/dev/null \
        || die "apt-get install docker.io failed"
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is not on PATH"
fi
command -v docker >/dev/null 2>&1 || die "dockerd is installed but the docker client is not on PATH"

# 2. A running daemon.
if ! "${SUDO[@]}" docker info >/dev/null 2>&1; then
    echo "$PROG: starting dockerd (log: $LOG)" >&2
    "${SUDO[@]}" mkdir -p "$(dirname "$LOG")"
    # setsid + nohup: the daemon outlives this script and the shell that ran it.
    "${SUDO[@]}" setsid nohup dockerd --bridge=none --iptables=false >>"$LOG" 2>&1 </dev/null &
    pid=$!
    deadline=$(( SECONDS + TIMEOUT ))
    until "${SUDO[@]}" docker info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null && ! pgrep -x dockerd >/dev/null 2>&1; then
            die "dockerd exited during start-up; last log line: $(tail -n 1 "$LOG" 2>/dev/null)"
        fi
        [ "$SECONDS" -lt "$deadline" ] \
            || die "dockerd did not answer within ${TIMEOUT}s; see $LOG"
        sleep 0.5
    done
fi

# 3. Optionally, a single-node swarm.
if [ "$SWARM" -eq 1 ]; then
    state="$("${SUDO[@]}" docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}')"
    case "$state" in
        "active true") ;;
        "active false") die "this engine is a swarm worker, not a manager (docker swarm leave first)" ;;
        inactive*)
            "${SUDO[@]}" docker swarm init --advertise-addr 127.0.0.1 >/dev/null \
                || die "docker swarm init --advertise-addr 127.0.0.1 failed" ;;
        *) die "swarm is in state '$state'; fix it by hand (docker swarm leave --force)" ;;
    esac
fi

echo "docker $("${SUDO[@]}" docker version --format '{{.Server.Version}}') ready$([ "$SWARM" -eq 1 ] && echo ' (swarm manager)')"
