#!/usr/bin/env bash
# Encoding throughput: colwgpu (cpu and gpu backends) against the PyTorch reference
# (scripts/reference/bench_reference.py) on the same SciFact texts, as a markdown table.
#
#   scripts/bench_encode_vs_reference.sh [--docs N] [--queries M] [--gpu-docs N]
#       [--gpu-queries M] [--batch B] [--model DIR] [--data DIR] [--no-gpu] [--no-build]
#       [--precisions "f32 bf16"] [--rounds R]
#
# Texts: the first N lines of DATA/corpus.jsonl and the first M lines of
# DATA/queries.jsonl (what `colwgpu encode --limit` takes). The gpu backend gets its own,
# smaller counts (a software adapter such as lavapipe is slow); the reference is then run
# on those same texts too, so every ratio compares identical inputs.
#
# Timed regions: colwgpu's own `seconds` (tokenisation + encoding, after its warm-up; model
# load and output writing excluded); the reference's whole encode call after one warm-up
# batch, torch at REF_THREADS threads, length-sorted batches of B.
#
# The cpu backend runs once per precision (default: f32, plus bf16 when the CPU has
# AVX512-BF16 or AMX-BF16); every ratio is against PyTorch's f32. The table is preceded
# by the CPU model, its SIMD features and the load average (before and after), since
# other processes on the machine change every figure.
#
# --rounds R (default 1) repeats the whole set R times, interleaved (reference, then each
# colwgpu run, then the next round), and reports medians: tokens/s is the median over the
# rounds, and the ratio the median of the per-round ratios, with their range. On a shared
# VM one round can move a ratio by ±0.1.
#
# Environment: PRECISIONS, ROUNDS, REF_PYTHON (default /work/refenv/bin/python), REF_THREADS (default 2),
# COLWGPU_BIN (default target/release/colwgpu), DOCS, QUERIES, GPU_DOCS, GPU_QUERIES,
# BATCH, MODEL, DATA (flags win over the environment).
set -euo pipefail
cd "$(dirname "$0")/.."

REF_PYTHON=${REF_PYTHON:-/work/refenv/bin/python}
REF_THREADS=${REF_THREADS:-2}
BIN=${COLWGPU_BIN:-target/release/colwgpu}
DOCS=${DOCS:-500}
QUERIES=${QUERIES:-300}
GPU_DOCS=${GPU_DOCS:-64}
GPU_QUERIES=${GPU_QUERIES:-$QUERIES}
BATCH=${BATCH:-32}
MODEL=${MODEL:-models/colbert-minilm}
DATA=${DATA:-../shared/data/scifact}
RUN_GPU=1
BUILD=1
ROUNDS=${ROUNDS:-1}
if grep -qw 'avx512_bf16\|amx_bf16' /proc/cpuinfo 2>/dev/null; then
    PRECISIONS=${PRECISIONS:-f32 bf16}
else
    PRECISIONS=${PRECISIONS:-f32}
fi

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --docs) DOCS=$2; shift 2 ;;
        --queries) QUERIES=$2; shift 2 ;;
        --gpu-docs) GPU_DOCS=$2; shift 2 ;;
        --gpu-queries) GPU_QUERIES=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --model) MODEL=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --no-gpu) RUN_GPU=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --precisions) PRECISIONS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for n in "$DOCS" "$QUERIES" "$GPU_DOCS" "$GPU_QUERIES" "$BATCH" "$ROUNDS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "not a count: $n" >&2; exit 2; }
done
[ "$ROUNDS" -ge 1 ] || { echo "--rounds must be at least 1" >&2; exit 2; }

CORPUS=$DATA/corpus.jsonl
QFILE=$DATA/queries.jsonl
for f in "$CORPUS" "$QFILE" "$MODEL/config.json" scripts/reference/bench_reference.py; do
    [ -e "$f" ] || { echo "missing: $f" >&2; exit 1; }
done
command -v "$REF_PYTHON" >/dev/null 2>&1 || { echo "REF_PYTHON not found: $REF_PYTHON" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
    echo "building colwgpu (release)..." >&2
    cargo build --release --quiet --bin colwgpu >&2
fi
[ -x "$BIN" ] || { echo "missing binary: $BIN (cargo build --release)" >&2; exit 1; }

cpu_model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
simd=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' \
    | grep -E '^(avx2|fma|avx512f|avx512_bf16|avx512_fp16|avx512_vnni|amx_bf16|amx_int8|amx_tile)$' \
    | sort | tr '\n' ' ' || true)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')

WORK=$(mktemp -d "${TMPDIR:-/tmp}/colwgpu-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROWS=$WORK/rows.jsonl
: > "$ROWS"
FAILED=0

# --- PyTorch reference -------------------------------------------------------
ref_bench() { # ndocs nqueries
    echo "pytorch reference: $1 docs, $2 queries (torch threads $REF_THREADS)..." >&2
    if ! "$REF_PYTHON" scripts/reference/bench_reference.py --model "$MODEL" \
        --corpus "$CORPUS" --queries "$QFILE" --docs "$1" --nqueries "$2" \
        --batch "$BATCH" --threads "$REF_THREADS" > "$WORK/ref.out" 2> "$WORK/ref.err"; then
        echo "pytorch reference failed:" >&2; tail -20 "$WORK/ref.err" >&2
        FAILED=1
        return 0
    fi
    grep '^{' "$WORK/ref.out" | "$REF_PYTHON" -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l); r["round"] = int(sys.argv[1]); print(json.dumps(r))' "$ROUND" >> "$ROWS" || true
}

# --- colwgpu -----------------------------------------------------------------
rust_bench() { # device kind(docs|queries) count [precision]
    local device=$1 kind=$2 n=$3 precision=${4:-f32} flag input label
    [ "$n" -gt 0 ] || return 0
    label=$device; [ "$precision" = f32 ] || label="$device $precision"
    if [ "$kind" = docs ]; then flag=--docs; input=$CORPUS; else flag=--queries; input=$QFILE; fi
    echo "colwgpu --device $device --precision $precision: $n $kind..." >&2
    if ! "$BIN" encode --model "$MODEL" "$flag" "$input" --out "$WORK/$device-$precision-$kind.safetensors" \
        --device "$device" --precision "$precision" --limit "$n" --batch-size "$BATCH" --json \
        > "$WORK/rust.out" 2> "$WORK/rust.err"; then
        echo "colwgpu --device $device $kind failed:" >&2; tail -20 "$WORK/rust.err" >&2
        printf '{"impl":"colwgpu","backend":"%s","kind":"%s","texts":%s,"error":true,"round":%s}\n' \
            "$label" "$kind" "$n" "$ROUND" >> "$ROWS"
        FAILED=1
        return 0
    fi
    local line
    line=$(grep '^{' "$WORK/rust.out" | tail -1 || true)
    if [ -z "$line" ]; then
        echo "colwgpu --device $device $kind printed no JSON summary" >&2
        FAILED=1
        return 0
    fi
    "$REF_PYTHON" -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(impl="colwgpu", backend=sys.argv[2], kind=sys.argv[3], round=int(sys.argv[4])); print(json.dumps(r))' \
        "$line" "$label" "$kind" "$ROUND" >> "$ROWS"
}

# --- the rounds: reference, then every colwgpu run --------------------------
for ROUND in $(seq 1 "$ROUNDS"); do
    [ "$ROUNDS" = 1 ] || echo "round $ROUND of $ROUNDS" >&2
    ref_bench "$DOCS" "$QUERIES"
    if [ "$RUN_GPU" = 1 ]; then
        # Reference rows for the gpu subsets, unless the counts are the same already.
        gd=$GPU_DOCS; gq=$GPU_QUERIES
        [ "$gd" = "$DOCS" ] && gd=0
        [ "$gq" = "$QUERIES" ] && gq=0
        if [ "$gd" != 0 ] || [ "$gq" != 0 ]; then ref_bench "$gd" "$gq"; fi
    fi
    for p in $PRECISIONS; do
        rust_bench cpu docs "$DOCS" "$p"
        rust_bench cpu queries "$QUERIES" "$p"
    done
    if [ "$RUN_GPU" = 1 ]; then
        rust_bench gpu docs "$GPU_DOCS"
        rust_bench gpu queries "$GPU_QUERIES"
    fi
done

# --- table -------------------------------------------------------------------
echo "CPU: ${cpu_model:-unknown}, $(nproc 2>/dev/null || echo '?') logical CPUs; SIMD: ${simd:-none found}"
echo "load average (1/5/15 min): before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
echo
"$REF_PYTHON" - "$ROWS" "$REF_THREADS" <<'PY'
import json, sys
from statistics import median
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
threads = sys.argv[2]
rounds = max((r.get("round", 1) for r in rows), default=1)
ref = {(r["kind"], r["texts"], r.get("round", 1)): r for r in rows if r.get("impl") == "pytorch"}
# One line per (impl, backend, kind, texts): medians over the rounds.
groups = {}
for r in rows:
    groups.setdefault((r.get("impl"), r.get("backend", ""), r["kind"], r["texts"]), []).append(r)
if rounds == 1:
    print("| impl | backend | kind | texts | tokens | seconds | tokens/s | ratio vs pytorch |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
else:
    print(f"| impl | backend | kind | texts | tokens | seconds (median) | tokens/s (median of {rounds}) "
          f"| ratio vs pytorch (median, range) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
notes = []
def order(g):
    impl, backend, kind, texts = g[0]
    return (kind, texts if impl == "pytorch" else 0, impl != "pytorch", backend, texts)
for key, rs in sorted(groups.items(), key=order):
    impl, _, kind, texts = key
    r = rs[0]
    if impl == "pytorch":
        backend = f"torch cpu, {r.get('threads', threads)} threads, {r.get('attn', '?')}"
    else:
        dev = r.get("device") or ""
        backend = dev if dev.startswith(r["backend"]) else (f"{r['backend']} ({dev})" if dev else r["backend"])
    ok = [x for x in rs if not x.get("error")]
    if not ok:
        print(f"| {impl} | {backend} | {kind} | {texts} | – | failed | – | – |")
        continue
    if len(ok) < len(rs):
        notes.append(f"{impl} {backend} {kind}: {len(rs) - len(ok)} of {len(rs)} rounds failed")
    ratios = []
    for x in ok:
        base = ref.get((kind, texts, x.get("round", 1)))
        if impl == "pytorch":
            ratios.append(1.0)
        elif base:
            ratios.append(x["tokens_per_s"] / base["tokens_per_s"])
            if base["tokens"] != x["tokens"]:
                notes.append(f"token counts differ for {impl} {x['backend']} {kind}: "
                             f"{x['tokens']} vs pytorch {base['tokens']}")
    if not ratios:
        ratio = "–"
    elif rounds == 1 or impl == "pytorch":
        ratio = f"{median(ratios):.2f}"
    else:
        ratio = f"{median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
    secs = median(x["seconds"] for x in ok)
    tps = median(x["tokens_per_s"] for x in ok)
    print(f"| {impl} | {backend} | {kind} | {texts} | {ok[0]['tokens']} | "
          f"{secs:.3f} | {tps:.0f} | {ratio} |")
print()
print("tokens = real sequence lengths incl. [CLS], marker and [SEP] (queries: 32 each, the [MASK] "
      "expansion is computed); ratio = tokens/s over the pytorch row with the same kind and texts.")
for n in notes:
    print(f"WARNING: {n}")
PY

exit "$FAILED"
