#!/usr/bin/env bash
# The racing study's analysis, end to end, from the committed sweeps (no training):
#   bash scripts/race-study.sh [OUT]            (OUT defaults to results/race-study)
# 1. `ditkd race pool`: the race with every audit, seed, head and scratch sweep, per budget at the
#    last rung: P(best), the verdict (decided, tie set, or what to train), rank agreement between
#    rungs, and the study's compute against the full grid -> results/race/race/pooled.json;
# 2. `ditkd merge`: every run into one table (a run trained twice counts once);
# 3. `ditkd fit` with the study's fixed protocol (--floor auto --min-head-dim 12: the floor chosen
#    by the laws' leave-one-budget-out errors, without 800k in the held-out fit; it picks the
#    teacher's value on the data so far; the compute laws on the curve points from 4,000 steps, past
#    the students' plateau), then the same with 800k held out, and law (g) alone -> law-g.json;
# 4. plots, the report, and `ditkd best` at every budget (at its upper edge, nominal + tol).
# ONLY="race race-audit ..." takes just those sweeps (to reproduce a number stated before later ones
# ran; the README names the list beside each such number); EXCLUDE="sweep ..." leaves sweeps out.
# DITKD names the binary for the analysis (default: target/release/ditkd); the rows themselves
# come from the study's training build, whatever analyses them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DITKD="${DITKD:-target/release/ditkd}"
OUT="${1:-results/race-study}"
# Every sweep of the study that exists here (results/race-*, the output excepted), the race first.
SOURCES=()
for d in results/race results/race-*; do
    case "$d" in "$OUT" | "$OUT.tmp" | results/race-study*) continue ;; esac
    case " ${EXCLUDE:-} " in *" ${d#results/} "*) continue ;; esac
    if [ -n "${ONLY:-}" ]; then case " $ONLY " in *" ${d#results/} "*) ;; *) continue ;; esac; fi
    [ -d "$d/runs" ] && SOURCES+=("$d")
done
echo "== sources: ${SOURCES[*]}"
WITH=()
for d in "${SOURCES[@]:1}"; do WITH+=(--with "$d"); done
"$DITKD" race pool sweeps/race.yaml "${WITH[@]}"
rm -rf "$OUT.tmp"
"$DITKD" merge --allow-mixed --out "$OUT.tmp" "${SOURCES[@]}"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
mkdir -p "$OUT/race" && cp results/race/race/pooled.json "$OUT/race/pooled.json"
"$DITKD" fit "$OUT" --floor auto --min-head-dim 12 --min-curve-step 4000
"$DITKD" fit "$OUT" --floor auto --min-head-dim 12 --min-curve-step 4000 --hold-out 800k
# The compute law (g) on its own (the training excess that grows with depth), for `best --steps`.
"$DITKD" fit "$OUT" --floor auto --min-head-dim 12 --min-curve-step 4000 --law g --out "$OUT/law-g.json"
"$DITKD" plot "$OUT"
"$DITKD" report "$OUT"
# `best` caps params at --budget, and the study's budgets are nominal ±tol (race.yaml: 10 % at 50k,
# 8 % above; 400k's d6-w60 has 423k): each is asked at its upper edge, so that the shapes the study
# measured there (and their seeds) are among the contenders.
for b in 55k 108k 216k 432k 864k; do
    "$DITKD" best --results "$OUT" --budget "$b" --force
done
