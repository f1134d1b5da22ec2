#!/usr/bin/env bash
# Run sweep specs one after another with one fixed ditkd binary (the build a study's rows must all
# come from: the racing study's is 4400bb5's), JOBS runs at a time, logging to stdout.
#   DITKD=/work/bin/ditkd-study bash scripts/study-queue.sh 2 race-seeds-100k race-audit-400k ...
# EXTRA passes more flags to every `ditkd sweep` (e.g. EXTRA=--allow-changed-spec after a spec
# gained curve points). Each sweep resumes whatever is on disk, so the queue can be rerun after a kill.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DITKD="${DITKD:?set DITKD to the ditkd binary of the study}"
jobs="$1"; shift
for s in "$@"; do
    echo "== $(date -u +%FT%TZ) $s (jobs $jobs)"
    # shellcheck disable=SC2086
    "$DITKD" sweep "sweeps/$s.yaml" --jobs "$jobs" ${EXTRA:-} 2>&1 | tr '\r' '\n' | grep -vE '^\s*$|it/s|steps/s'
    echo "== $(date -u +%FT%TZ) $s done rc=${PIPESTATUS[0]}"
done
