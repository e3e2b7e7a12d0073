#!/usr/bin/env bash
# Send the two example entries to a running summa-worker and print the mini-tree JSON.
#   bash scripts/test_sending_entry.sh [PORT]      (default 4000, on 127.0.0.1)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${SUMMA_VENV:-$ROOT/.venv}/bin/python"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m summa_aggregation.worker.client --port "${1:-4000}"
