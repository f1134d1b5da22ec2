#!/usr/bin/env bash
# Execute every notebook in notebooks/ headless against a sweep directory; exit non-zero if any
# cell of any notebook fails (the notebooks assert their sanity checks).
#
# usage: notebooks/run.sh [DIR]      DIR: a sweep results directory [results/fashion-mnist]
#   OUT=dir   where the executed copies (with outputs) are written [a new temporary directory]
#
# The Python environment is notebooks/.venv, created on first use from requirements.txt and
# reinstalled when requirements.txt changes.
set -euo pipefail

NB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$NB_DIR/.." && pwd)"
DIR="${1:-$ROOT/results/fashion-mnist}"
[[ -f "$DIR/runs.parquet" ]] || { echo "run.sh: $DIR/runs.parquet not found (run the sweep first)" >&2; exit 2; }
DIR="$(cd "$DIR" && pwd)"

VENV="$NB_DIR/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/requirements.installed"
if [[ ! -x "$PY" ]] || ! cmp -s "$NB_DIR/requirements.txt" "$STAMP"; then
    echo "run.sh: installing notebooks/requirements.txt into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$NB_DIR/requirements.txt"
    cp "$NB_DIR/requirements.txt" "$STAMP"
fi

OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
export DITKD_SWEEP="$DIR"
"$PY" - "$OUT" "$NB_DIR"/*.ipynb <<'PY'
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

out, failed = Path(sys.argv[1]), []
for path in map(Path, sys.argv[2:]):
    nb = nbformat.read(path, as_version=4)
    # Run from the notebook's own directory, as Jupyter would (relative paths resolve the same).
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
        print(f"ok      {path.name}")
    except CellExecutionError as e:
        failed.append(path.name)
        print(f"FAILED  {path.name}\n{e}", file=sys.stderr)
    nbformat.write(nb, out / path.name)
print(f"executed notebooks in {out}")
sys.exit(1 if failed else 0)
PY
