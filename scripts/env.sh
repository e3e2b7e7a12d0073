# Sourced by the other scripts: make (or reuse) the project's virtualenv and install into it.
# SUMMA_VENV picks another location; SUMMA_PYTHON another interpreter (3.10 or newer).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SUMMA_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "${SUMMA_PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e "$ROOT[$1]"
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
