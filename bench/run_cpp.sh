#!/usr/bin/env bash
# Build and run the C++ optimizer microbenchmarks, then print a summary:
# per rule / ISA / threads / tensor count, the median GB/s and its ratio to the
# STREAM-like triad of the same thread count (the machine's memory bandwidth).
#
#   bench/run_cpp.sh                                   # everything (~2-4 min on 2 cores)
#   bench/run_cpp.sh --benchmark_filter='triad|adam/'  # extra args go to the binary
#   bench/run_cpp.sh --quick [filter args]             # a quick look: 1 repetition, 0.05 s
#
# Environment: REPS (5), MIN_TIME (0.3 seconds), BUILD_DIR (build/bench),
# FL_BENCH_N (elements per benchmark, default 16M), JSON (raw results file).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--quick" ]; then
  shift
  REPS="${REPS:-1}"
  MIN_TIME="${MIN_TIME:-0.05}"
fi
REPS="${REPS:-5}"
MIN_TIME="${MIN_TIME:-0.3}"
BUILD_DIR="${BUILD_DIR:-build/bench}"
JSON="${JSON:-$BUILD_DIR/optim_bench.json}"

# ---- Google Benchmark ---------------------------------------------------------
if [ ! -f /usr/include/benchmark/benchmark.h ] && ! dpkg -s libbenchmark-dev >/dev/null 2>&1; then
  echo "== installing libbenchmark-dev" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  $SUDO apt-get install -y libbenchmark-dev
fi

# ---- build ----------------------------------------------------------------------
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFUSEDLEARN_BENCH=ON -DFUSEDLEARN_PYTHON=OFF -DFUSEDLEARN_CUDA=OFF >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target fl_optim_bench
BIN="$BUILD_DIR/bench/fl_optim_bench"

# ---- the --benchmark_min_time syntax -------------------------------------------
# Google Benchmark >= 1.8 takes "0.3s" (and "<n>x" for iterations); 1.7 (Debian
# bookworm's libbenchmark-dev 1.7.1) only a bare number of seconds and rejects "0.3s".
MT="${MIN_TIME%s}"
if "$BIN" --benchmark_filter='^$' --benchmark_min_time="${MT}s" >/dev/null 2>&1; then
  MIN_TIME_FLAG="--benchmark_min_time=${MT}s"
else
  MIN_TIME_FLAG="--benchmark_min_time=${MT}"
fi

# ---- run ------------------------------------------------------------------------
echo "== $BIN --benchmark_repetitions=$REPS $MIN_TIME_FLAG $*" >&2
"$BIN" --benchmark_repetitions="$REPS" --benchmark_report_aggregates_only=true "$MIN_TIME_FLAG" \
  --benchmark_out="$JSON" --benchmark_out_format=json "$@"

# ---- summary --------------------------------------------------------------------
python3 - "$JSON" "$REPS" <<'EOF'
import json, sys

with open(sys.argv[1]) as f:
    data = json.load(f)

# Median aggregates when there are repetitions, else the single runs.
runs = {}
for b in data["benchmarks"]:
    name = b.get("run_name", b["name"]).replace("/real_time", "")
    if b.get("run_type") == "aggregate":
        if b.get("aggregate_name") == "median":
            runs.setdefault(name, {})["gbs"] = b["GB/s"]
        elif b.get("aggregate_name") == "cv":
            runs.setdefault(name, {})["cv"] = b["GB/s"]
        if "B/elem" in b:
            runs.setdefault(name, {}).setdefault("bpe", b["B/elem"])
    else:
        r = runs.setdefault(name, {"_single": []})
        r.setdefault("_single", []).append(b["GB/s"])
        r["bpe"] = b.get("B/elem")
for r in runs.values():
    if "gbs" not in r and r.get("_single"):
        s = sorted(r["_single"])
        r["gbs"] = s[len(s) // 2]

def field(parts, key):
    for p in parts:
        if p.startswith(key + ":"):
            return p.split(":", 1)[1]
    return None

triad = {}  # (store|stream, nt, staggered) -> GB/s
rows = []
for name, r in runs.items():
    parts = name.split("/")
    stag = "staggered" in parts
    if parts[0] == "triad":
        triad[(parts[1], field(parts, "nt"), stag)] = r["gbs"]
    elif parts[0] == "optim":
        rows.append((parts[1], parts[2], field(parts, "nt"), field(parts, "tensors"), stag, r))

ctx = data.get("context", {})
print()
print(f"elements: {ctx.get('fl_elements', '?')}   isas: {ctx.get('fl_isas', '?')}   "
      f"openmp: {ctx.get('fl_openmp', '?')}   cpus: {ctx.get('num_cpus', '?')}   "
      f"repetitions: {sys.argv[2]} (median)")
print("GB/s = 1e9 bytes/s of the bytes the update must move (4 B per stream read + 4 B per stream written)")
print()
if triad:
    print("triad a = b + s*c, 12 B/elem, GB/s:")
    for stag in (False, True):
        cells = [f"{kind} nt={nt}: {triad[(kind, nt, stag)]:6.2f}"
                 for nt in ("1", "2") for kind in ("store", "stream") if (kind, nt, stag) in triad]
        if cells:
            print(f"  {'staggered' if stag else 'same-offset':<12}" + "   ".join(cells))
    print()
hdr = (f"{'rule':<26} {'isa':<7} {'nt':>2} {'tensors':>11} {'B/el':>4} {'GB/s':>7} {'cv%':>5} "
       f"{'/triad':>7} {'/limit':>7}")
print(hdr)
print("-" * len(hdr))
for rule, isa, nt, tensors, stag, r in rows:
    g = r["gbs"]
    # The streaming triad laid out like this row: same page offset for a plain single
    # tensor, staggered for staggered rows and for 200-tensor lists (assorted offsets).
    matched = triad.get(("stream", nt, stag or tensors != "1"))
    limit = triad.get(("stream", nt, True))
    cv = f"{100 * r['cv']:5.1f}" if "cv" in r else "    -"
    rm = f"{g / matched:7.2f}" if matched else "      -"
    rl = f"{g / limit:7.2f}" if limit else "      -"
    bpe = int(r["bpe"]) if r.get("bpe") else 0
    t = tensors + ("/stag" if stag else "")
    print(f"{rule:<26} {isa:<7} {nt:>2} {t:>11} {bpe:>4} {g:7.2f} {cv} {rm} {rl}")
print()
print("/triad: ratio to the median non-temporal-store triad of the same thread count and the same")
print("        array layout (1.0 = the update runs at the bandwidth the hardware delivers).")
print("/limit: ratio to the staggered non-temporal-store triad of the same thread count (STREAM-like).")
EOF
