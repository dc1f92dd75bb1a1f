#!/usr/bin/env bash
# The WGSL path on whatever adapter this machine has, in one prepared run:
# `colwgpu info`, the kernel and shader tests and the encoder's GPU-vs-CPU test
# with the GPU, then one table (matmul GFLOP/s at BERT shapes, encode tokens/s
# for documents and queries, MaxSim / decompress / PLAID throughput from the
# search bench, the adapter's name and limits).
#
#   scripts/gpu-check.sh --bundle [DIR]   build here and pack everything the
#                                         check needs into DIR (default
#                                         target/gpu-check, well under 64 MiB):
#                                         binaries, the model as f16, a SciFact slice
#   scripts/gpu-check.sh --run [DIR]      run the check from DIR (builds nothing:
#                                         for a machine with a GPU and no network)
#   scripts/gpu-check.sh                  both, here (on lavapipe: a smoke test)
#
# Counts (environment): DOCS (encode, default 256), QUERIES (default 300),
# PLAID_DOCS (indexed, default 1000), SAMPLES (criterion samples, default 10),
# ROWS (matmul rows, default 5888 = 32 × 184 tokens). DEVICE (default gpu).
# The model travels as f16 safetensors (44 MB instead of 88 MB): the GPU-vs-CPU
# encoder test then compares both backends on the same f16-rounded weights (its
# tolerances are unchanged); the golden-output parity tests need the f32 model
# and are run only where models/colbert-minilm is present (not from a bundle).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=both
DIR=target/gpu-check
case "${1:-}" in
    --bundle) MODE=bundle; DIR=${2:-$DIR} ;;
    --run) MODE=run; DIR=${2:-$DIR} ;;
    "") ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac
DOCS=${DOCS:-256}
QUERIES=${QUERIES:-300}
PLAID_DOCS=${PLAID_DOCS:-1000}
SAMPLES=${SAMPLES:-10}
ROWS=${ROWS:-5888}
DEVICE=${DEVICE:-gpu}
DATA_SRC=${DATA:-../shared/data/scifact}

bundle() {
    echo "== building (release) and packing into $DIR" >&2
    rm -rf "$DIR"
    mkdir -p "$DIR/bin" "$DIR/model" "$DIR/data"
    cargo build --release --locked --bin colwgpu >&2
    cp target/release/colwgpu "$DIR/bin/"
    # Test and bench executables, as cargo names them.
    local json
    json=$(cargo test --release --locked --no-run --message-format=json \
        --test kernels --test shaders --test encoder 2>/dev/null)
    for t in kernels shaders encoder; do
        local exe
        exe=$(printf '%s\n' "$json" | grep '"executable":"[^"]*' | grep "\"name\":\"$t\"" \
            | sed 's/.*"executable":"\([^"]*\)".*/\1/' | tail -1)
        [ -n "$exe" ] || { echo "no test executable for $t" >&2; exit 1; }
        cp "$exe" "$DIR/bin/test-$t"
    done
    json=$(cargo bench --locked --no-run --message-format=json --bench kernels --bench search 2>/dev/null)
    for b in kernels search; do
        local exe
        exe=$(printf '%s\n' "$json" | grep '"executable":"[^"]*' | grep "\"name\":\"$b\"" \
            | sed 's/.*"executable":"\([^"]*\)".*/\1/' | tail -1)
        [ -n "$exe" ] || { echo "no bench executable for $b" >&2; exit 1; }
        cp "$exe" "$DIR/bin/bench-$b"
    done
    # The model, f16: every file but the weights copied, weights converted.
    local src=models/colbert-minilm
    [ -f "$src/model.safetensors" ] || bash models/fetch-model.sh >&2
    mkdir -p "$DIR/model/1_Dense"
    for f in "$src"/* "$src"/1_Dense/*; do
        case $f in *.safetensors) ;; *) [ -f "$f" ] && cp "$f" "$DIR/model/${f#"$src"/}" ;; esac
    done
    python_f16 "$src/model.safetensors" "$DIR/model/model.safetensors"
    python_f16 "$src/1_Dense/model.safetensors" "$DIR/model/1_Dense/model.safetensors"
    # A SciFact slice.
    if [ -f "$DATA_SRC/corpus.jsonl" ]; then
        head -n "$((PLAID_DOCS > DOCS ? PLAID_DOCS : DOCS))" "$DATA_SRC/corpus.jsonl" > "$DIR/data/corpus.jsonl"
        head -n "$QUERIES" "$DATA_SRC/queries.jsonl" > "$DIR/data/queries.jsonl"
    else
        echo "no SciFact at $DATA_SRC: encode and PLAID rows will be skipped" >&2
    fi
    # Symbols are not needed there; the run tool carries at most 64 MiB.
    if command -v strip >/dev/null 2>&1; then strip "$DIR"/bin/* 2>/dev/null || true; fi
    local mib
    mib=$(du -sm "$DIR" | cut -f1)
    echo "bundle: $mib MiB in $DIR" >&2
    [ "$mib" -le 64 ] || echo "WARNING: the bundle is over 64 MiB ($mib MiB): carry it compressed or leave out the bench binaries" >&2
}

# safetensors f32 → f16 with the Rust side's own reader/writer is not a CLI
# command, so a few lines of Python (stdlib only) do it at bundle time.
python_f16() {
    python3 - "$1" "$2" <<'PY'
import json, struct, sys, array
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
    if t["dtype"] == "F32":
        vals = array.array("f"); vals.frombytes(data)
        data = b"".join(struct.pack("<e", v) for v in vals)
        dtype = "F16"
    else:
        dtype = t["dtype"]
    out_header[name] = {"dtype": dtype, "shape": t["shape"], "data_offsets": [off, off + len(data)]}
    chunks.append(data); off += len(data)
h = json.dumps(out_header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for c in chunks: f.write(c)
PY
}

run() {
    local bin=$DIR/bin
    [ -x "$bin/colwgpu" ] || { echo "no bundle at $DIR (run with --bundle first)" >&2; exit 1; }
    work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    local fails=0
    echo "== colwgpu info"
    "$bin/colwgpu" info --device "$DEVICE" --model "$DIR/model" | tee "$work/info.txt" || fails=1

    echo "== tests with the GPU (kernels, shaders, encoder GPU vs CPU)"
    export COLWGPU_TEST_MODEL=$PWD/$DIR/model
    for t in kernels shaders; do
        "$bin/test-$t" --test-threads 1 2>&1 | tail -3 || fails=1
    done
    "$bin/test-encoder" gpu_backend_matches_cpu_backend --test-threads 1 2>&1 | tail -3 || fails=1

    echo "== throughput"
    : > "$work/rows.txt"
    # matmul at BERT shapes (criterion: elem/s = FLOP/s).
    COLWGPU_BENCH_ROWS=$ROWS "$bin/bench-kernels" --bench 'matmul/gpu' \
        --sample-size "$SAMPLES" --warm-up-time 1 --measurement-time 3 --noplot 2>&1 \
        | tee "$work/matmul.txt" | grep -E 'thrpt|^matmul' || fails=1
    awk '/^matmul\//{name=$1} /thrpt:.*elem\/s/{print "| matmul " name " | " $(NF-3) " " $(NF-2) " |"}' \
        "$work/matmul.txt" | sed 's/Gelem\/s/GFLOP\/s/; s/Melem\/s/MFLOP\/s/; s/Telem\/s/TFLOP\/s/' >> "$work/rows.txt"
    if [ -f "$DIR/data/corpus.jsonl" ]; then
        for kind in docs queries; do
            local n input
            if [ "$kind" = docs ]; then n=$DOCS; input=$DIR/data/corpus.jsonl; else n=$QUERIES; input=$DIR/data/queries.jsonl; fi
            for dev in "$DEVICE" cpu; do
                if "$bin/colwgpu" encode --model "$DIR/model" "--$kind" "$input" --limit "$n" \
                    --device "$dev" --json --out "$work/$dev-$kind.safetensors" > "$work/enc.json" 2> "$work/enc.err"; then
                    python3 -c 'import json,sys; r=json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1]); t=r["texts"]; s=r["tokens_per_s"]; print(f"| encode {sys.argv[2]} ({sys.argv[3]}, {t} texts) | {s:.0f} tokens/s |")' \
                        "$work/enc.json" "$kind" "$dev" >> "$work/rows.txt"
                else
                    echo "encode $kind on $dev failed:"; tail -5 "$work/enc.err"; fails=1
                fi
            done
        done
        # PLAID over a SciFact slice, queries/s end to end (encode + search).
        if "$bin/colwgpu" index --model "$DIR/model" --corpus "$DIR/data/corpus.jsonl" --limit "$PLAID_DOCS" \
            --device "$DEVICE" --index "$work/scifact.index" > "$work/index.txt" 2>&1; then
            local s0 s1
            s0=$(date +%s.%N)
            if "$bin/colwgpu" search --index "$work/scifact.index" --model "$DIR/model" \
                --queries "$DIR/data/queries.jsonl" --device "$DEVICE" -k 10 > "$work/search.txt" 2>&1; then
                s1=$(date +%s.%N)
                python3 -c 'import sys; print(f"| PLAID search, {sys.argv[3]} queries over {sys.argv[4]} docs, end to end incl. load | {int(sys.argv[3])/(float(sys.argv[2])-float(sys.argv[1])):.1f} queries/s |")' \
                    "$s0" "$s1" "$(wc -l < "$DIR/data/queries.jsonl")" "$PLAID_DOCS" >> "$work/rows.txt"
            else
                echo "search failed:"; tail -5 "$work/search.txt"; fails=1
            fi
        else
            echo "index failed:"; tail -5 "$work/index.txt"; fails=1
        fi
    fi
    # MaxSim and decompress from the search bench (GPU entries).
    "$bin/bench-search" --bench 'gpu' --sample-size "$SAMPLES" --warm-up-time 1 \
        --measurement-time 3 --noplot > "$work/search-bench.txt" 2>&1 || fails=1
    awk '/^[a-z_]+\/[^ ]*gpu/{name=$1} /thrpt:.*elem\/s/ && name!="" {print "| " name " | " $(NF-3) " " $(NF-2) " |"; name=""}' \
        "$work/search-bench.txt" >> "$work/rows.txt"

    echo
    echo "| measure | value |"
    echo "|---|---|"
    grep -m1 -iE 'adapter|using' "$work/info.txt" | sed 's/^/| adapter | /; s/$/ |/' || true
    cat "$work/rows.txt"
    echo
    echo "limits (from colwgpu info):"
    grep -iE 'max_|limit' "$work/info.txt" | head -20 || true
    [ "$fails" = 0 ] && echo "gpu-check: all steps passed" || echo "gpu-check: some steps FAILED (see above)"
    return "$fails"
}

case $MODE in
    bundle) bundle ;;
    run) run ;;
    both) bundle; run ;;
esac
