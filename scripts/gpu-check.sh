#!/usr/bin/env bash
# The WGSL path on whatever adapter this machine has, in one prepared, bounded
# run: the adapters and limits (what `colwgpu info` prints), the kernel and
# shader tests and the encoder's GPU-vs-CPU and --precision f16 tests on the
# GPU, then one table (benches/gpu_check.rs): matmul GFLOP/s at BERT shapes,
# encode tokens/s for documents and queries (GPU and CPU on the same texts, and
# GPU --precision f16 with its weight memory and min cosine vs f32 where the
# adapter has SHADER_F16), MaxSim documents/s, decompress vectors/s, PLAID
# queries/s on SciFact, the adapter's name and limits.
#
#   scripts/gpu-check.sh --bundle [DIR]   build here and pack what the run needs
#                                         into DIR (default target/gpu-check) and
#                                         DIR.tar.xz: four stripped executables,
#                                         the model as f16, SciFact
#   scripts/gpu-check.sh --run [DIR]      run from DIR or DIR.tar.xz (builds
#                                         nothing: for a machine with a GPU and
#                                         no network)
#   scripts/gpu-check.sh                  both, here (on lavapipe: a smoke test)
#
# Carry DIR.tar.xz (about 50 MiB; the directory itself is over 64 MiB) and run
# `scripts/gpu-check.sh --run target/gpu-check.tar.xz`. Sizes are bounded by
# the adapter: on a software one (lavapipe) small slices (16 documents and 32
# queries encoded, PLAID over 24 documents, 512-row matmuls; about 5 minutes
# on a 2-core machine); on a real GPU
# 2,000 documents and every query encoded, PLAID over all of SciFact (5,183
# documents, its 300 judged test queries, with nDCG@10), 5,888-row matmuls.
# FULL=1 asks for the real-GPU sizes on any adapter; COLWGPU_CHECK_* variables
# (see benches/gpu_check.rs) set each size. Every timed loop stops after
# COLWGPU_CHECK_SECONDS (default 2) or 50 iterations.
#
# The model travels as f16 safetensors (44 MB instead of 88 MB): the
# GPU-vs-CPU encoder test then compares both backends on the same f16-rounded
# weights (its tolerances are unchanged); the golden-output parity tests need
# the f32 model and are not run from a bundle. For the same reason the f16
# rows' cosine shows the GPU's f16 path against its f32 path on weights that
# f16 already holds exactly; what f16 rounding of f32 weights costs is
# adapter-independent and measured by tests/encoder.rs (README, precision).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=both
DIR=target/gpu-check
case "${1:-}" in
    --bundle) MODE=bundle; DIR=${2:-$DIR} ;;
    --run) MODE=run; DIR=${2:-$DIR} ;;
    "") ;;
    -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac
DATA_SRC=${DATA:-../shared/data/scifact}

# The executable cargo built for target NAME of kind KIND (test or bench), from
# cargo's JSON messages on stdin.
executable() {
    python3 -c '
import json, sys
name, kind = sys.argv[1], sys.argv[2]
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    if m.get("executable") and t.get("name") == name and kind in t.get("kind", []):
        exe = m["executable"]
print(exe or "")' "$1" "$2"
}

bundle() {
    echo "== building (release) and packing into $DIR" >&2
    rm -rf "$DIR" "$DIR.tar.xz"
    mkdir -p "$DIR/bin" "$DIR/model/1_Dense" "$DIR/data/qrels"
    local json exe t
    json=$(cargo test --release --locked --no-run --message-format=json \
        --test kernels --test shaders --test encoder)
    for t in kernels shaders encoder; do
        exe=$(printf '%s\n' "$json" | executable "$t" test)
        [ -n "$exe" ] || { echo "no test executable for $t" >&2; exit 1; }
        cp "$exe" "$DIR/bin/test-$t"
    done
    json=$(cargo bench --locked --no-run --message-format=json --bench gpu_check)
    exe=$(printf '%s\n' "$json" | executable gpu_check bench)
    [ -n "$exe" ] || { echo "no bench executable for gpu_check" >&2; exit 1; }
    cp "$exe" "$DIR/bin/gpu-check"
    strip "$DIR"/bin/*
    # The model, f16: every file but the weights copied, weights converted.
    local src=models/colbert-minilm f
    [ -f "$src/model.safetensors" ] || bash models/fetch-model.sh >&2
    for f in "$src"/* "$src"/1_Dense/*; do
        case $f in *.safetensors) ;; *) [ -f "$f" ] && cp "$f" "$DIR/model/${f#"$src"/}" ;; esac
    done
    python_f16 "$src/model.safetensors" "$DIR/model/model.safetensors"
    python_f16 "$src/1_Dense/model.safetensors" "$DIR/model/1_Dense/model.safetensors"
    if [ -f "$DATA_SRC/corpus.jsonl" ]; then
        cp "$DATA_SRC/corpus.jsonl" "$DATA_SRC/queries.jsonl" "$DIR/data/"
        cp "$DATA_SRC/qrels/test.tsv" "$DIR/data/qrels/"
    else
        echo "no SciFact at $DATA_SRC: the encode and PLAID rows will be skipped" >&2
    fi
    tar -C "$(dirname "$DIR")" -cf - "$(basename "$DIR")" | xz -T0 -6 > "$DIR.tar.xz.part"
    mv "$DIR.tar.xz.part" "$DIR.tar.xz"
    echo "bundle: $(du -sm "$DIR" | cut -f1) MiB in $DIR, $(du -m "$DIR.tar.xz" | cut -f1) MiB as $DIR.tar.xz:" >&2
    (cd "$DIR" && du -sh bin/* model data) >&2
    [ "$(du -m "$DIR.tar.xz" | cut -f1)" -le 64 ] || echo "WARNING: $DIR.tar.xz is over the 64 MiB carry limit" >&2
}

# safetensors f32 → f16 (stdlib Python only).
python_f16() {
    python3 - "$1" "$2" <<'PY'
import array, json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
body = raw[8 + n:]
out_header, chunks, off = {}, [], 0
for name, t in header.items():
    if name == "__metadata__":
        out_header[name] = t
        continue
    a, b = t["data_offsets"]
    data = body[a:b]
    dtype = t["dtype"]
    if dtype == "F32":
        vals = array.array("f"); vals.frombytes(data)
        data = struct.pack(f"<{len(vals)}e", *vals)
        dtype = "F16"
    out_header[name] = {"dtype": dtype, "shape": t["shape"], "data_offsets": [off, off + len(data)]}
    chunks.append(data); off += len(data)
h = json.dumps(out_header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(dst + ".part", "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for c in chunks: f.write(c)
import os; os.replace(dst + ".part", dst)
PY
}

run() {
    local start=$SECONDS fails=0 t
    work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    if [ -f "$DIR" ] && [[ $DIR == *.tar.xz ]]; then
        tar -C "$work" -xJf "$DIR"
        DIR=$work/$(basename "${DIR%.tar.xz}")
    fi
    local bin=$DIR/bin
    [ -x "$bin/gpu-check" ] || { echo "no bundle at $DIR (run with --bundle first)" >&2; exit 1; }
    DIR=$(cd "$DIR" && pwd)
    echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

    echo "== tests on the GPU (kernels, shaders, encoder GPU vs CPU and --precision f16 on the f16 model)"
    export COLWGPU_TEST_MODEL=$DIR/model
    for t in kernels shaders; do
        "$bin/test-$t" --test-threads 1 > "$work/test-$t.txt" 2>&1 || fails=1
        grep -E '^test result|FAILED|panicked' "$work/test-$t.txt" | sed "s/^/  $t: /"
    done
    "$bin/test-encoder" gpu_backend_matches_cpu_backend f16_precision_on_the_gpu --test-threads 1 \
        > "$work/test-encoder.txt" 2>&1 || fails=1
    grep -E '^test result|FAILED|panicked' "$work/test-encoder.txt" | sed 's/^/  encoder: /'
    echo "  ($((SECONDS - start)) s so far)"

    echo "== throughput (benches/gpu_check.rs)"
    if [ -f "$DIR/data/corpus.jsonl" ]; then export COLWGPU_CHECK_DATA=$DIR/data; fi
    export COLWGPU_CHECK_MODEL=$DIR/model
    if [ -n "${FULL:-}" ]; then
        : "${COLWGPU_CHECK_DOCS:=2000}" "${COLWGPU_CHECK_QUERIES:=1109}" "${COLWGPU_CHECK_PLAID_DOCS:=1000000}"
        : "${COLWGPU_CHECK_PLAID_QUERIES:=1000000}" "${COLWGPU_CHECK_ROWS:=5888}"
        : "${COLWGPU_CHECK_MAXSIM_DOCS:=20000}" "${COLWGPU_CHECK_DECOMPRESS:=500000}"
        export COLWGPU_CHECK_DOCS COLWGPU_CHECK_QUERIES COLWGPU_CHECK_PLAID_DOCS \
            COLWGPU_CHECK_PLAID_QUERIES COLWGPU_CHECK_ROWS COLWGPU_CHECK_MAXSIM_DOCS COLWGPU_CHECK_DECOMPRESS
    fi
    "$bin/gpu-check" > "$work/table.md" 2> "$work/gpu-check.txt" || fails=1
    sed 's/^/  /' "$work/gpu-check.txt"
    echo
    cat "$work/table.md"
    echo
    echo "gpu-check: $((SECONDS - start)) s"
    if [ "$fails" = 0 ]; then echo "gpu-check: all steps passed"; else echo "gpu-check: some steps FAILED (see above)"; fi
    return "$fails"
}

case $MODE in
    bundle) bundle ;;
    run) run ;;
    both) bundle; DIR=$DIR.tar.xz; run ;;
esac
