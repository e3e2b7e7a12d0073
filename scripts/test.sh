#!/usr/bin/env bash
# The whole test suite, from a fresh machine: bash scripts/test.sh [pytest args...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" test
exec python -m pytest "$@"
