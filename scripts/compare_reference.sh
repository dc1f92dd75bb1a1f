#!/usr/bin/env bash
# colwgpu against the reference PLAID implementation (stanford ColBERT, `colbert-ai`),
# side by side on one BEIR set: same checkpoint, same nbits, same k-means iterations.
# Both engines index the corpus and run every judged test query at k = 10 and k = 100;
# one metric implementation scores both runs (scripts/reference/compare_metrics.py)
# and prints nDCG@10, Recall@100, index size, build time and queries/s as one table.
#
#   bash scripts/compare_reference.sh [--docs N] [--device auto|cpu|gpu] [--nbits 2]
#                                     [--data DIR] [--out DIR] [--no-reference]
#
# --docs N indexes the first N documents only (qrels are cut to them), e.g. to run
# the WGSL path on lavapipe (`--device gpu --docs 1000`) in reasonable time.
# The reference needs its own Python environment (transformers < 5):
#   bash scripts/reference/setup_colbert_env.sh .venv-colbert
# (or set COLBERT_PY to a python that has colbert-ai). Times are wall-clock seconds
# on this machine, including model loading; queries/s includes query encoding for
# both engines. colbert-ai compiles C++ extensions on first use: a warm-up run on a
# small slice (e.g. --docs 200) keeps that out of the build time.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=../shared/data/scifact
DOCS=0
DEVICE=auto
NBITS=2
KMEANS_ITERS=4
OUT=""
REFERENCE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --docs) DOCS="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --nbits) NBITS="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-reference) REFERENCE=0; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-target/compare/$(basename "$DATA")-docs${DOCS}-${DEVICE}}"
PY="${COLBERT_PY:-.venv-colbert/bin/python}"
MODEL_SRC=models/colbert-minilm
if [[ $REFERENCE == 1 && ! -x "$PY" ]]; then
  echo "no colbert-ai python at $PY: run 'bash scripts/reference/setup_colbert_env.sh' or set COLBERT_PY" >&2
  exit 1
fi
[[ -d "$MODEL_SRC" ]] || bash models/fetch-model.sh
[[ -f "$DATA/corpus.jsonl" ]] || { echo "no $DATA/corpus.jsonl" >&2; exit 1; }

cargo build --release --locked --quiet
BIN=target/release/colwgpu
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$PWD/target/mesa-shader-cache}"
mkdir -p "$OUT"

# 1. The data both engines see: the corpus (or its first N records) and the test
#    qrels cut to the documents indexed.
python3 - "$DATA" "$OUT/data" "$DOCS" <<'PY'
import json, os, shutil, sys
src, dst, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(f"{dst}/qrels", exist_ok=True)
ids = set()
with open(f"{src}/corpus.jsonl") as fin, open(f"{dst}/corpus.jsonl", "w") as fout:
    for line in fin:
        if not line.strip():
            continue
        if limit and len(ids) >= limit:
            break
        ids.add(str(json.loads(line)["_id"]))
        fout.write(line)
with open(f"{src}/qrels/test.tsv") as fin, open(f"{dst}/qrels/test.tsv", "w") as fout:
    for i, line in enumerate(fin):
        if i == 0 or line.split("\t")[1] in ids:
            fout.write(line)
shutil.copy(f"{src}/queries.jsonl", f"{dst}/queries.jsonl")
PY

# 2. One checkpoint for both: the stanford layout, which colbert-ai loads and colwgpu reads.
CONVERT_PY=python3
python3 -c "import safetensors.numpy" 2>/dev/null || CONVERT_PY="$PY"
"$CONVERT_PY" -c "import safetensors.numpy" 2>/dev/null || {
  echo "converting the checkpoint needs python with numpy + safetensors (e.g. COLBERT_PY=.venv-colbert/bin/python)" >&2; exit 1; }
"$CONVERT_PY" scripts/reference/to_stanford_layout.py "$MODEL_SRC" "$OUT/model" >/dev/null

# 3. colwgpu: build, then search at k = 10 and 100.
now() { date +%s.%N; }
t0=$(now)
"$BIN" index --model "$OUT/model" --corpus "$OUT/data/corpus.jsonl" --index "$OUT/colwgpu.index" \
  --nbits "$NBITS" --kmeans-iters "$KMEANS_ITERS" --device "$DEVICE" --json >"$OUT/colwgpu-index.json"
t1=$(now)
echo "colwgpu index: $(cat "$OUT/colwgpu-index.json")" >&2
for k in 10 100; do
  "$BIN" eval --index "$OUT/colwgpu.index" --model "$OUT/model" --queries "$OUT/data/queries.jsonl" \
    --qrels "$OUT/data/qrels/test.tsv" -k "$k" --device "$DEVICE" --json \
    --run "$OUT/colwgpu_run_k$k.tsv" >"$OUT/colwgpu-eval-k$k.json"
  echo "colwgpu eval k=$k: $(cat "$OUT/colwgpu-eval-k$k.json")" >&2
done

# 4. The reference.
if [[ $REFERENCE == 1 ]]; then
  "$PY" scripts/reference/colbert_plaid_beir.py --model "$OUT/model" --data "$OUT/data" \
    --out "$OUT/reference" --nbits "$NBITS" --kmeans-iters "$KMEANS_ITERS" -k 10 -k 100 2>"$OUT/reference.log" \
    || { tail -30 "$OUT/reference.log" >&2; exit 1; }
fi

# 5. One summary per row, then the table.
python3 - "$OUT" "$t0" "$t1" "$REFERENCE" <<'PY'
import json, sys
out, t0, t1, reference = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
index = json.load(open(f"{out}/colwgpu-index.json"))
for k in (10, 100):
    ev = json.load(open(f"{out}/colwgpu-eval-k{k}.json"))
    row = {"k": k, "build_s": t1 - t0, "index_bytes": index["index_bytes"], "vectors": index["vectors"],
           "qps": ev["end_to_end_qps"], "device": ev["device"],
           "check": {"ndcg@10": ev["ndcg@10"], "recall@100": ev["recall@100"]}}
    json.dump(row, open(f"{out}/colwgpu-k{k}.json", "w"))
    if reference:
        ref = json.load(open(f"{out}/reference/summary.json"))
        row = {"k": k, "build_s": ref["build_s"], "index_bytes": ref["index_bytes"], "vectors": ref["vectors"],
               "qps": ref["search"][str(k)]["qps"]}
        json.dump(row, open(f"{out}/reference-k{k}.json", "w"))
PY
rows=()
for k in 10 100; do
  rows+=(--row "colwgpu ($DEVICE):$OUT/colwgpu_run_k$k.tsv:$OUT/colwgpu-k$k.json")
  [[ $REFERENCE == 1 ]] && rows+=(--row "colbert-ai:$OUT/reference/run_k$k.tsv:$OUT/reference-k$k.json")
done
python3 scripts/reference/compare_metrics.py --qrels "$OUT/data/qrels/test.tsv" --json "$OUT/table.json" "${rows[@]}" \
  | tee "$OUT/table.md"
echo "colwgpu device: $(python3 -c "import json;print(json.load(open('$OUT/colwgpu-k10.json'))['device'])"); files in $OUT" >&2
