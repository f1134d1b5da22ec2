#!/usr/bin/env bash
# Time candle (ditkd) against PyTorch (and optionally JAX) on CPU, in alternating rounds, and write
# a comparison table to bench/results.md (also printed).
#
# Cases (names as in `ditkd bench --only` and `dit_torch.py --config`):
#   step   the training step (forward + MSE + backward + clip + AdamW):
#          the study's students d1w60 d3w80 d8w24 d4w100 (batch 64) at STUDY_THREADS,
#          configs A (batch 128) and B (batch 64) at THREADS
#   sample 500 images of 25-step DDIM with guidance 2 (torch under inference_mode), the students,
#          at STUDY_THREADS
#   gemm   a 512^3 f32 matmul at STUDY_THREADS: the single-core peak the "% of peak" column uses
# Each round runs every case in both frameworks back to back; odd rounds start with candle, even
# rounds with PyTorch. Per case the table gives the median over rounds of each framework's time and
# of the per-round ratio candle/PyTorch, with the ratio's range (min-max over rounds).
#
# Environment knobs (defaults in brackets):
#   ROUNDS [3]            alternating rounds
#   THREADS [2]           threads for A and B (candle --threads, torch.set_num_threads, XLA)
#   STUDY_THREADS [1]     threads for the students, the sampler and the GEMM (a sweep runs 1 per job)
#   ITERS [20] WARMUP [2] timed and untimed steps per step run (B: ITERS_B [3], its step is ~5 s)
#   STEP_CASES ["d1w60 d3w80 d8w24 d4w100 A B"]   SAMPLE_CASES ["d1w60 d3w80 d8w24 d4w100"]
#   JAX [0]               1 also times dit_jax.py on A and B (needs jax + optax, bench/requirements-jax.txt)
#   SKIP_CANDLE [0]       1 skips the candle runs (e.g. no Rust toolchain); its columns stay empty
#   CANDLE_BIN [built]    use this ditkd binary instead of building one
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-2}"
STUDY_THREADS="${STUDY_THREADS:-1}"
ITERS="${ITERS:-20}"
ITERS_B="${ITERS_B:-3}"
WARMUP="${WARMUP:-2}"
STEP_CASES="${STEP_CASES:-d1w60 d3w80 d8w24 d4w100 A B}"
SAMPLE_CASES="${SAMPLE_CASES:-d1w60 d3w80 d8w24 d4w100}"
JAX="${JAX:-0}"
SKIP_CANDLE="${SKIP_CANDLE:-0}"
VENV="$BENCH_DIR/.venv"
PY="$VENV/bin/python"
LOGDIR="$BENCH_DIR/logs"
RESULTS_JSONL="$LOGDIR/results.jsonl"
RESULTS_MD="$BENCH_DIR/results.md"

log() { printf '[run_all] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Python environment
if [[ ! -x "$PY" ]]; then
    log "creating $VENV and installing bench/requirements.txt (torch; a few GB)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$BENCH_DIR/requirements.txt"
fi
"$PY" -c 'import torch' || { log "the venv at $VENV is incomplete; delete it and rerun"; exit 1; }
if [[ "$JAX" == "1" ]]; then
    "$PY" -c 'import jax, optax' 2>/dev/null || "$VENV/bin/pip" install -q -r "$BENCH_DIR/requirements-jax.txt"
fi

mkdir -p "$LOGDIR"
: > "$RESULTS_JSONL"

# ---------------------------------------------------------------- candle binary (built once, outside the timed window)
CANDLE_BIN="${CANDLE_BIN:-}"
if [[ "$SKIP_CANDLE" != "1" && -z "$CANDLE_BIN" ]]; then
    log "building ditkd (release)"
    (cd "$ROOT" && cargo build --release -q -p harness --bin ditkd)
    TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
        | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    CANDLE_BIN="$TARGET_DIR/release/ditkd"
fi
if [[ "$SKIP_CANDLE" == "1" ]]; then CANDLE_BIN=""; fi
[[ -z "$CANDLE_BIN" || -x "$CANDLE_BIN" ]] || { log "no binary at $CANDLE_BIN"; exit 1; }

# Run one measurement and append its JSON line (the last line starting with `{`), tagged with the
# round and the load average at its start, to the results.
# usage: measure ROUND LOGNAME cmd args...
measure() {
    local round="$1" name="$2"
    shift 2
    local load
    load="$(cut -d' ' -f1 /proc/loadavg)"
    "$@" > "$LOGDIR/$name.r$round.log" 2>&1 || { cat "$LOGDIR/$name.r$round.log" >&2; log "$name failed"; exit 1; }
    local line
    line="$(grep '^{' "$LOGDIR/$name.r$round.log" | tail -n 1)"
    [[ -n "$line" ]] || { log "no JSON line in $LOGDIR/$name.r$round.log"; exit 1; }
    "$PY" -c 'import json, sys; r = json.loads(sys.argv[1]); r.setdefault("kind", "step"); r["round"] = int(sys.argv[2]); r["load1"] = float(sys.argv[3]); print(json.dumps(r))' \
        "$line" "$round" "$load" >> "$RESULTS_JSONL"
    log "  $name: $(grep -v '^{' "$LOGDIR/$name.r$round.log" | grep -E 'step [0-9.]+ ms|images/s|GFLOP/s' | tail -n 1)"
}

threads_of() { case "$1" in A|B) echo "$THREADS" ;; *) echo "$STUDY_THREADS" ;; esac; }
iters_of() { case "$1" in B) echo "$ITERS_B" ;; *) echo "$ITERS" ;; esac; }

candle() { # kind case round
    local kind="$1" cfg="$2" round="$3" th
    [[ -n "$CANDLE_BIN" ]] || return 0
    th="$(threads_of "$cfg")"
    case "$kind" in
        gemm) measure "$round" "candle_gemm" "$CANDLE_BIN" --threads "$STUDY_THREADS" bench --kind gemm ;;
        step) measure "$round" "candle_step_$cfg" "$CANDLE_BIN" --threads "$th" bench --kind step --only "$cfg" \
                  --warmup "$WARMUP" --iters "$(iters_of "$cfg")" ;;
        sample) measure "$round" "candle_sample_$cfg" "$CANDLE_BIN" --threads "$STUDY_THREADS" bench --kind sample --only "$cfg" ;;
    esac
}

torch() { # kind case round
    local kind="$1" cfg="$2" round="$3" th
    th="$(threads_of "$cfg")"
    case "$kind" in
        gemm) measure "$round" "torch_gemm" "$PY" "$BENCH_DIR/dit_torch.py" --kind gemm --threads "$STUDY_THREADS" ;;
        step) measure "$round" "torch_step_$cfg" "$PY" "$BENCH_DIR/dit_torch.py" --kind step --config "$cfg" \
                  --threads "$th" --warmup "$WARMUP" --iters "$(iters_of "$cfg")" ;;
        sample) measure "$round" "torch_sample_$cfg" "$PY" "$BENCH_DIR/dit_torch.py" --kind sample --config "$cfg" \
                    --threads "$STUDY_THREADS" --iters 1 ;;
    esac
    if [[ "$JAX" == "1" && "$kind" == step && ( "$cfg" == A || "$cfg" == B ) ]]; then
        measure "$round" "jax_step_$cfg" "$PY" "$BENCH_DIR/dit_jax.py" --config "$cfg" \
            --threads "$th" --warmup "$WARMUP" --iters "$(iters_of "$cfg")"
    fi
}

START_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
START_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
log "start $START_DATE, load average $START_LOAD, $(nproc) CPUs, rounds $ROUNDS, threads $THREADS (A, B) / $STUDY_THREADS (students)"

for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    jobs=("gemm -")
    for c in $STEP_CASES; do jobs+=("step $c"); done
    for c in $SAMPLE_CASES; do jobs+=("sample $c"); done
    for job in "${jobs[@]}"; do
        read -r kind cfg <<< "$job"
        if (( round % 2 == 1 )); then
            candle "$kind" "$cfg" "$round"; torch "$kind" "$cfg" "$round"
        else
            torch "$kind" "$cfg" "$round"; candle "$kind" "$cfg" "$round"
        fi
    done
done

END_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- table
"$PY" - "$RESULTS_JSONL" "$RESULTS_MD" "$START_DATE" "$START_LOAD" "$END_LOAD" "$THREADS" "$STUDY_THREADS" \
    "$WARMUP" "$ITERS" "$ITERS_B" "$ROUNDS" <<'EOF'
import json, platform, statistics, sys
jsonl, md_path, date, load0, load1, threads, sthreads, warmup, iters, iters_b, rounds = sys.argv[1:12]
rows = [json.loads(l) for l in open(jsonl) if l.strip()]
versions = {r["framework"]: r.get("version", "") for r in rows}
med = statistics.median

def get(fw, kind, cfg=None):
    return [r for r in rows if r["framework"] == fw and r["kind"] == kind and r.get("config") == cfg]

def by_round(rs):
    return {r["round"]: r for r in rs}

gemm = {fw: [r["gflops"] for r in get(fw, "gemm")] for fw in ("candle", "torch")}
gemm_cpu = {fw: [r["gflops_cpu"] for r in get(fw, "gemm") if "gflops_cpu" in r] for fw in ("candle", "torch")}
# "% of peak" is judged by CPU time on both sides (step GFLOP/s of CPU time over the GEMM's), which
# a loaded machine distorts far less than wall time; without CPU-time rows it falls back to wall time.
use_cpu = bool(gemm_cpu["candle"])
peak = med(gemm_cpu["candle"]) if use_cpu else (med(gemm["candle"]) if gemm["candle"] else None)
loads = [r["load1"] for r in rows]

def rng(v, fmt):
    return f"{fmt(min(v))}-{fmt(max(v))}" if v else "-"

out = [
    "# candle vs PyTorch on CPU: the study's students, sampling, and configs A and B",
    "",
    f"{date}, {platform.processor() or platform.machine()}, {rounds} alternating rounds; "
    f"load average {load0} at start, {load1} at end "
    f"(1-min load at the start of each measurement: median {med(loads):.2f}, range {min(loads):.2f}-{max(loads):.2f}).",
    f"torch {versions.get('torch', '?')}. Step = forward + MSE + backward + grad-norm clip 1.0 + AdamW "
    f"(lr 1e-4, wd 0), f32, median of {iters} steps after {warmup} (B: {iters_b}) per run. "
    "Sampling = 500 images, 25-step DDIM, guidance 2 (chunks of 250, each step one batch-500 forward).",
    "",
]
if peak:
    out.append(f"f32 GEMM 512^3 at {sthreads} thread(s), best of 20 calls, median over rounds: candle "
               f"{med(gemm['candle']):.1f} GFLOP/s wall-time (range {rng(gemm['candle'], lambda v: f'{v:.1f}')}), "
               + (f"{med(gemm_cpu['candle']):.1f} GFLOP/s CPU-time; " if use_cpu else "(no CPU-time rows); ")
               + "PyTorch " + (f"{med(gemm['torch']):.1f}" if gemm["torch"] else "-") + " wall, "
               + (f"{med(gemm_cpu['torch']):.1f}" if gemm_cpu["torch"] else "-") + " CPU-time GFLOP/s.")
    out.append("")
out += [
    "| case | params | batch | threads | candle ms | PyTorch ms | candle/PyTorch (median, range) | same, CPU time | candle GFLOP/s (of CPU time) | % of GEMM peak |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
cfgs = []
for r in rows:
    if r["kind"] == "step" and r["config"] not in cfgs:
        cfgs.append(r["config"])
for c in cfgs:
    ca, to = by_round(get("candle", "step", c)), by_round(get("torch", "step", c))
    any_r = next(iter((ca or to).values()))
    ratios = [ca[k]["median_ms"] / to[k]["median_ms"] for k in ca if k in to]
    cpu_r = [ca[k]["cpu_ms"] / to[k]["cpu_ms"] for k in ca if k in to and "cpu_ms" in ca[k] and "cpu_ms" in to[k]]
    cms = [r["median_ms"] for r in ca.values()]
    tms = [r["median_ms"] for r in to.values()]
    gf = med([r["gflops"] for r in ca.values()]) if ca else None
    gfc = med([r["gflops_cpu"] for r in ca.values() if "gflops_cpu" in r] or [0]) if ca else None
    gp = gfc if use_cpu else gf
    out.append(
        f"| step {c} | {any_r['params']:,} | {any_r['batch']} | {any_r['threads']} | "
        + (f"{med(cms):.1f}" if cms else "-") + " | " + (f"{med(tms):.1f}" if tms else "-") + " | "
        + (f"{med(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "-") + " | "
        + (f"{med(cpu_r):.2f}x ({min(cpu_r):.2f}-{max(cpu_r):.2f})" if cpu_r else "-") + " | "
        + (f"{gf:.1f}" + (f" ({gfc:.1f} CPU)" if gfc else "") if gf else "-") + " | "
        + (f"{100 * gp / peak:.0f} %" if gp and peak and str(any_r['threads']) == sthreads else "-") + " |")
out += [
    "",
    "| sampling | params | candle images/s | PyTorch images/s | candle/PyTorch images/s (median, range) | same, CPU time |",
    "|---|---:|---:|---:|---:|---:|",
]
scfgs = []
for r in rows:
    if r["kind"] == "sample" and r["config"] not in scfgs:
        scfgs.append(r["config"])
for c in scfgs:
    ca, to = by_round(get("candle", "sample", c)), by_round(get("torch", "sample", c))
    any_r = next(iter((ca or to).values()))
    speedups = [ca[k]["images_per_s"] / to[k]["images_per_s"] for k in ca if k in to]
    cpu_s = [to[k]["cpu_ms"] / ca[k]["cpu_ms"] for k in ca if k in to and "cpu_ms" in ca[k] and "cpu_ms" in to[k]]
    ci = [r["images_per_s"] for r in ca.values()]
    ti = [r["images_per_s"] for r in to.values()]
    out.append(
        f"| {c} | {any_r['params']:,} | " + (f"{med(ci):.1f}" if ci else "-") + " | "
        + (f"{med(ti):.1f}" if ti else "-") + " | "
        + (f"{med(speedups):.2f}x ({min(speedups):.2f}-{max(speedups):.2f})" if speedups else "-") + " | "
        + (f"{med(cpu_s):.2f}x ({min(cpu_s):.2f}-{max(cpu_s):.2f})" if cpu_s else "-") + " |")
out += [
    "",
    "Step ratios below 1 and sampling ratios above 1 mean candle is faster. Each ratio is taken within a round "
    "(the two frameworks back to back), then the median and range over rounds are given; the ms and images/s "
    "columns are medians over rounds (wall time). 'CPU time' is the same ratio from the processes' CPU time "
    "(clock_gettime / time.process_time over the same intervals), which the other processes on a loaded "
    "machine inflate far less than wall time; it is comparable at 1 thread (at 2 threads it adds both "
    "threads' busy time, spin-waits included). '% of GEMM peak' divides the step's GFLOP/s by the 512^3 "
    "GEMM's, both of CPU time when the rows carry it (else both of wall time). Raw rows: bench/logs/results.jsonl.",
]
jax = [r for r in rows if r["framework"] == "jax"]
if jax:
    out += ["", "JAX (step, median over rounds): " + ", ".join(
        f"{c} {med([r['median_ms'] for r in jax if r['config'] == c]):.0f} ms" for c in sorted({r['config'] for r in jax}))]
text = "\n".join(out) + "\n"
open(md_path, "w").write(text)
print()
print(text)
EOF
log "table written to $RESULTS_MD (raw rows: $RESULTS_JSONL)"
