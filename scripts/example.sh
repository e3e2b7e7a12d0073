#!/usr/bin/env bash
# The main job on the example fixtures, from a fresh machine: bash scripts/example.sh [OUT_DIR]
# Aggregates four 16-entry CSVs with local worker processes, writes the result directory,
# then proves and verifies one user's inclusion against the printed root.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" test
OUT="${1:-example-result-$(date +%Y%m%d-%H%M%S)}"
FIX=tests/data/fixtures
ROOT_JSON=$(summa-aggregate --workers 2 --out "$OUT" $FIX/entry_16_1.csv $FIX/entry_16_2.csv \
    $FIX/entry_16_3.csv $FIX/entry_16_4.csv | tail -n 1)
echo "root: $ROOT_JSON"
echo "result directory: $OUT"
summa-proof "$OUT" MBlfbBGI > "$OUT.proof-MBlfbBGI.json"
ROOT_HASH=$(python -c 'import json,sys; print(json.loads(sys.argv[1])["hash"])' "$ROOT_JSON")
summa-verify --root "$ROOT_HASH" "$OUT.proof-MBlfbBGI.json"
