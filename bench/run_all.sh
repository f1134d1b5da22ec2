#!/usr/bin/env bash
# Time the same DiT training step (forward + MSE + backward + clip + AdamW) in candle (ditkd),
# PyTorch and JAX on CPU, config A and B, back to back, and write a comparison table to
# bench/results.md (also printed).
#
# Environment knobs (defaults in brackets):
#   THREADS [2]   threads for every framework (candle --threads, torch.set_num_threads, XLA)
#   ITERS [10]    timed steps per run;  WARMUP [2]  untimed steps before them
#   CONFIGS ["A B"]
#   SKIP_CANDLE [0] 1 skips the candle runs (e.g. no Rust toolchain); its columns stay empty
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
THREADS="${THREADS:-2}"
ITERS="${ITERS:-10}"
WARMUP="${WARMUP:-2}"
CONFIGS="${CONFIGS:-A B}"
SKIP_CANDLE="${SKIP_CANDLE:-0}"
VENV="$BENCH_DIR/.venv"
PY="$VENV/bin/python"
LOGDIR="$BENCH_DIR/logs"
RESULTS_JSONL="$LOGDIR/results.jsonl"
RESULTS_MD="$BENCH_DIR/results.md"

log() { printf '[run_all] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Python environment
if [[ ! -x "$PY" ]]; then
    log "creating $VENV and installing bench/requirements.txt (torch, jax, optax; a few GB)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$BENCH_DIR/requirements.txt"
fi
"$PY" -c 'import torch, jax, optax' || { log "the venv at $VENV is incomplete; delete it and rerun"; exit 1; }

mkdir -p "$LOGDIR"
: > "$RESULTS_JSONL"

# Run a command, tee its output to a log, and record the peak RSS (MB) of its largest descendant.
# usage: with_rss RSS_FILE LOG_FILE cmd args...
with_rss() {
    local rss_file="$1" log_file="$2"
    shift 2
    "$PY" -c '
import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
with open(sys.argv[1], "w") as f:
    f.write("%.1f" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0))
sys.exit(rc)
' "$rss_file" "$@" 2>&1 | tee "$log_file"
}

# ---------------------------------------------------------------- candle binary (built once, outside the timed window)
CANDLE_BIN=""
if [[ "$SKIP_CANDLE" != "1" ]]; then
    log "building ditkd (release)"
    (cd "$ROOT" && cargo build --release -q -p harness --bin ditkd)
    TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
        | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    CANDLE_BIN="$TARGET_DIR/release/ditkd"
    [[ -x "$CANDLE_BIN" ]] || { log "no binary at $CANDLE_BIN"; exit 1; }
fi

START_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
START_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
log "start $START_DATE, load average $START_LOAD, $(nproc) CPUs, threads $THREADS, warmup $WARMUP, iters $ITERS"

for cfg in $CONFIGS; do
    # candle: equivalent of `cargo run --release -p harness --bin ditkd -- bench --only $cfg`
    if [[ -n "$CANDLE_BIN" ]]; then
        log "candle config $cfg"
        with_rss "$LOGDIR/candle_$cfg.rss" "$LOGDIR/candle_$cfg.log" \
            "$CANDLE_BIN" --threads "$THREADS" bench --only "$cfg" --warmup "$WARMUP" --iters "$ITERS"
        "$PY" - "$cfg" "$LOGDIR/candle_$cfg.log" "$LOGDIR/candle_$cfg.rss" >> "$RESULTS_JSONL" <<'EOF'
import json, re, sys
cfg, log_path, rss_path = sys.argv[1:4]
text = open(log_path).read()
m = re.search(r"config (\w+) \(([\d,]+) params, batch (\d+)\): step (\d+(?:\.\d+)?) ms", text)
if not m or m.group(1) != cfg:
    sys.exit(f"could not find 'config {cfg} (... params, batch ...): step N ms' in {log_path}")
print(json.dumps({"framework": "candle", "config": cfg, "params": int(m.group(2).replace(",", "")),
                  "batch": int(m.group(3)), "median_ms": float(m.group(4)),
                  "peak_rss_mb": float(open(rss_path).read())}))
EOF
    fi
    for fw in torch jax; do
        log "$fw config $cfg"
        "$PY" "$BENCH_DIR/dit_$fw.py" --config "$cfg" --iters "$ITERS" --warmup "$WARMUP" --threads "$THREADS" \
            2>&1 | tee "$LOGDIR/${fw}_$cfg.log"
        line="$(grep '^{' "$LOGDIR/${fw}_$cfg.log" | tail -n 1)"
        [[ -n "$line" ]] || { log "no JSON line from dit_$fw.py config $cfg"; exit 1; }
        printf '%s\n' "$line" >> "$RESULTS_JSONL"
    done
done

END_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- table
"$PY" - "$RESULTS_JSONL" "$RESULTS_MD" "$START_DATE" "$START_LOAD" "$END_LOAD" "$THREADS" "$WARMUP" "$ITERS" <<'EOF'
import json, platform, sys
jsonl, md_path, date, load0, load1, threads, warmup, iters = sys.argv[1:9]
rows = [json.loads(l) for l in open(jsonl) if l.strip()]
by = {(r["config"], r["framework"]): r for r in rows}
configs = sorted({r["config"] for r in rows})
versions = {r["framework"]: r.get("version", "") for r in rows}

def ms(r):
    return f"{r['median_ms']:.0f}" if r else "-"

def mb(r):
    return f"{r['peak_rss_mb']:.0f}" if r else "-"

def ratio(a, b):
    return f"{a['median_ms'] / b['median_ms']:.2f}x" if a and b else "-"

out = [
    "# DiT training step: candle vs PyTorch vs JAX (CPU)",
    "",
    f"{date}, {platform.processor() or platform.machine()}, threads {threads}, warm-up {warmup}, "
    f"median of {iters} steps; load average {load0} at start, {load1} at end.",
    f"torch {versions.get('torch', '?')}, jax {versions.get('jax', '?')}. "
    "Step = forward + MSE + backward + grad-norm clip 1.0 + AdamW (lr 1e-4, wd 0), f32.",
    "",
    "| config | params | batch | candle ms | PyTorch ms | JAX ms | candle/PyTorch | candle/JAX "
    "| candle peak MB | PyTorch peak MB | JAX peak MB |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for c in configs:
    ca, to, ja = by.get((c, "candle")), by.get((c, "torch")), by.get((c, "jax"))
    any_r = ca or to or ja
    params = {r["params"] for r in (ca, to, ja) if r}
    p = f"{any_r['params']:,}" + ("" if len(params) == 1 else " (MISMATCH: " + ", ".join(f"{x:,}" for x in sorted(params)) + ")")
    out.append(f"| {c} | {p} | {any_r['batch']} | {ms(ca)} | {ms(to)} | {ms(ja)} | {ratio(ca, to)} | "
               f"{ratio(ca, ja)} | {mb(ca)} | {mb(to)} | {mb(ja)} |")
out += [
    "",
    "Ratios above 1 mean candle is slower. Peak MB is the process's max resident set "
    "(getrusage ru_maxrss); the PyPI torch wheel maps its CUDA libraries too, so its baseline is high "
    "(see init_rss_mb in bench/logs/*.log). JAX times exclude the first (compiling) call.",
]
text = "\n".join(out) + "\n"
open(md_path, "w").write(text)
print()
print(text)
EOF
log "table written to $RESULTS_MD (raw rows: $RESULTS_JSONL)"
