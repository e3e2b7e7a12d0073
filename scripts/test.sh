#!/usr/bin/env bash
# The whole test suite, from a fresh machine: bash scripts/test.sh [pytest args...]
# Docker tests run when an engine answers (the Swarm ones when it is a Swarm manager).
# SUMMA_REQUIRE_DOCKER=1 (what CI sets) makes them mandatory and first starts an engine as a
# single-node Swarm and builds a local base image (needs root).
# systemd tests run when systemd-analyze exists; SUMMA_REQUIRE_SYSTEMD=1 installs it if missing.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" test
if [ "${SUMMA_REQUIRE_SYSTEMD:-}" = "1" ] && ! command -v systemd-analyze >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd >/dev/null
fi
if [ "${SUMMA_REQUIRE_DOCKER:-}" = "1" ]; then
    bash scripts/start-docker.sh --swarm
    export SUMMA_BASE_IMAGE="${SUMMA_BASE_IMAGE:-$(bash scripts/docker-base-image.sh | tail -n 1)}"
fi
exec python -m pytest "$@"
