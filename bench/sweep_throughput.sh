#!/usr/bin/env bash
# Runs per hour of a real sweep (bench/sweep-throughput.yaml: four 100k students, 2,000 KD steps,
# two curve points, 2 jobs x 1 thread) for several ditkd builds, alternating builds over ROUNDS.
# Every round starts from an empty output and cache directory, so each build pays the same
# teacher-target prefill and reference evaluation. Run on a quiet machine.
#   BINS="/path/to/old/ditkd target/release/ditkd" ROUNDS=2 bash bench/sweep_throughput.sh
# Writes bench/logs/sweep_throughput.jsonl (one line per build and round) and prints a table, also
# written to bench/sweep_throughput.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BINS="${BINS:-target/release/ditkd}"
ROUNDS="${ROUNDS:-2}"
SPEC=bench/sweep-throughput.yaml
mkdir -p bench/logs
LOG=bench/logs/sweep_throughput.jsonl
for r in $(seq 1 "$ROUNDS"); do
    for b in $BINS; do
        work="$(mktemp -d)"
        # The same spec with its own cache directory, so nothing is reused between rounds.
        sed "s|^name: .*|&\ncache_dir: $work/cache|" "$SPEC" > "$work/spec.yaml"
        load="$(cut -d' ' -f1 /proc/loadavg)"
        t0="$(date +%s.%N)"
        "$b" sweep "$work/spec.yaml" --out "$work/out" --jobs 2 > "$work/log" 2>&1 \
            || { echo "$b failed, see $work/log" >&2; exit 1; }
        t1="$(date +%s.%N)"
        python3 - "$b" "$r" "$load" "$t0" "$t1" "$work/out/runs.csv" >> "$LOG" <<'PY'
import csv, json, sys
b, r, load, t0, t1, runs = sys.argv[1:]
rows = list(csv.DictReader(open(runs)))
version = rows[0]["code_version"]
walls = [float(x["train_wall_s"]) + float(x.get("eval_wall_s") or 0) for x in rows]
print(json.dumps({
    "bin": b, "version": version, "round": int(r), "load_start": float(load),
    "sweep_wall_s": float(t1) - float(t0), "runs": len(rows),
    "run_wall_s": walls, "mean_run_wall_s": sum(walls) / len(walls),
    # Two runs at a time: steady-state runs per hour from the runs' own wall times.
    "runs_per_hour": 2 * 3600 * len(walls) / sum(walls),
    "sweep_runs_per_hour": 3600 * len(rows) / (float(t1) - float(t0)),
}))
PY
        tail -1 "$LOG"
        rm -rf "$work"
    done
done
python3 - "$LOG" "$ROUNDS" $BINS <<'PY' | tee bench/sweep_throughput.md
import json, statistics, sys
log, rounds, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = [json.loads(l) for l in open(log)][-rounds * len(bins):]
loads = [x["load_start"] for x in rows]
print(f"bench/sweep_throughput.sh: {rounds} alternating rounds of bench/sweep-throughput.yaml "
      f"(4 runs, 2 jobs x 1 thread); 1-min load average at the start of each sweep "
      f"{min(loads):.2f}-{max(loads):.2f}\n")
print("| build | rounds | runs/hour (runs' wall) median (range) | runs/hour (whole sweep) median (range) | mean run wall s |")
print("|---|---:|---:|---:|---:|")
for b in bins:
    rs = [x for x in rows if x["bin"] == b]
    rph = [x["runs_per_hour"] for x in rs]
    sph = [x["sweep_runs_per_hour"] for x in rs]
    w = [x["mean_run_wall_s"] for x in rs]
    print(f"| {b} ({rs[0]['version']}) | {len(rs)} | {statistics.median(rph):.1f} ({min(rph):.1f}-{max(rph):.1f}) | "
          f"{statistics.median(sph):.1f} ({min(sph):.1f}-{max(sph):.1f}) | {statistics.median(w):.0f} |")
PY
