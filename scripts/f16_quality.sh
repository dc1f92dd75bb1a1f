#!/usr/bin/env bash
# Issue 14: what `--precision f16` (the gpu backend's f16 weight storage) costs in
# retrieval quality on full SciFact, measured where a GPU is not needed.
#
# `--precision f16` changes one thing: each linear weight is rounded to f16 at
# upload; products and sums stay f32 (shaders/matmul.wgsl). The cpu backend run
# in f32 on a checkpoint whose linear weights are f16-rounded computes the same
# vectors up to f32 summation order (`scripts/gpu-check.sh`, whose checkpoint is
# f16 already, prints the gpu's f16 vs f32 cosine: 1.00000000 on lavapipe). So
# this script:
#   1. writes WORK_DIR/model-f16: the model with every linear weight (2-D
#      `*.weight` of the encoder layers and the projection) rounded to f16,
#      the embeddings and norms untouched (as the gpu backend stores them);
#   2. encodes every SciFact document and query with both checkpoints on the
#      cpu backend, f32 arithmetic;
#   3. reports the token cosine (min / p0.1 / p1 / mean), nDCG@10 of exact
#      MaxSim on the raw vectors, and nDCG@10 / MRR@10 of PLAID over a 2-bit
#      index (the f16 vectors compressed with the f32 index's codec, so codec
#      training noise does not enter).
#
# Usage: scripts/f16_quality.sh [DATA_DIR] [WORK_DIR]
#   DATA_DIR default ../shared/data/scifact, WORK_DIR default /tmp/colwgpu-f16
#   (vectors and indexes there are reused by later runs). Needs python3 with
#   numpy (PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/scifact}"
WORK="${2:-/tmp/colwgpu-f16}"
. scripts/lib/quality_setup.sh

# 1. The f16-rounded checkpoint (values rounded, stored as f32).
M16=$WORK/model-f16
if [ ! -f "$M16/1_Dense/model.safetensors" ]; then
    rm -rf "$M16.part" && mkdir -p "$M16.part/1_Dense"
    for f in "$MODEL"/* "$MODEL"/1_Dense/*; do
        case $f in *.safetensors) ;; *) [ -f "$f" ] && cp "$f" "$M16.part/${f#"$MODEL"/}" ;; esac
    done
    "$PYTHON" - "$MODEL" "$M16.part" <<'PY'
import json, struct, sys
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
def convert(rel, linear):
    raw = open(f"{src}/{rel}", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n]); body = bytearray(raw[8 + n:])
    rounded = 0
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32" or not linear(name, t["shape"]):
            continue
        a, b = t["data_offsets"]
        v = np.frombuffer(bytes(body[a:b]), dtype="<f4")
        h = v.astype(np.float16)
        assert np.isfinite(h).all(), f"{name}: beyond f16's range"
        body[a:b] = h.astype("<f4").tobytes(); rounded += 1
    open(f"{dst}/{rel}", "wb").write(raw[:8 + n] + bytes(body))
    return rounded
# The encoder's linears (attention query/key/value/output, intermediate, output
# dense), as the gpu backend uploads them through Backend::linear_weight.
bert = convert("model.safetensors", lambda name, shape: len(shape) == 2
               and name.endswith(".weight") and ".encoder." in f".{name}" and "LayerNorm" not in name)
dense = convert("1_Dense/model.safetensors", lambda name, shape: len(shape) == 2)
print(f"rounded to f16: {bert} encoder weights, {dense} projection weight(s)", file=sys.stderr)
assert bert == 6 * 6 and dense == 1, (bert, dense)
PY
    mv "$M16.part" "$M16"
fi

# 2. Vectors, both checkpoints, cpu backend, f32 arithmetic.
encode() { # model kind input out
    [ -f "$4" ] && return 0
    echo "encoding $2 with $1 → $4" >&2
    "$BIN" encode --device cpu --model "$1" "--$2" "$3" --json --out "$4.part.safetensors" >&2
    mv "$4.part.safetensors" "$4"
}
encode "$MODEL" docs "$DATA/corpus.jsonl" "$WORK/docs-f32.safetensors"
encode "$MODEL" queries "$DATA/queries.jsonl" "$WORK/queries-f32.safetensors"
encode "$M16" docs "$DATA/corpus.jsonl" "$WORK/docs-f16.safetensors"
encode "$M16" queries "$DATA/queries.jsonl" "$WORK/queries-f16.safetensors"

# 3. PLAID, the f16 vectors compressed with the f32 index's codec; eval encodes
# the judged queries with each index's checkpoint.
[ -d "$WORK/index-f32" ] || "$BIN" index --vectors "$WORK/docs-f32.safetensors" --model "$MODEL" \
    --nbits 2 --index "$WORK/index-f32" --device cpu >&2
[ -d "$WORK/index-f16" ] || "$BIN" index --vectors "$WORK/docs-f16.safetensors" --model "$M16" \
    --nbits 2 --index "$WORK/index-f16" --device cpu --codec-from "$WORK/index-f32" >&2
for p in f32 f16; do
    m=$MODEL; [ $p = f16 ] && m=$M16
    "$BIN" eval --index "$WORK/index-$p" --model "$m" --queries "$DATA/queries.jsonl" \
        --qrels "$DATA/qrels/test.tsv" --device cpu -k 10 --json | tail -1 > "$WORK/eval-$p.json"
done

"$PYTHON" - "$WORK" "$DATA/qrels/test.tsv" <<'PY'
import json, struct, sys
import numpy as np
work, qrels_path = sys.argv[1:3]
DTYPES = {"F32": np.float32, "U32": np.uint32, "I64": np.int64, "U64": np.uint64, "I32": np.int32}
def load(path, name="vectors"):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    body = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    t = header[name]; a, b = t["data_offsets"]
    return header["__metadata__"], np.frombuffer(body[a:b], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
print()
print("| token vectors, cosine f32 vs f16 weights | vectors | min | p0.1 | p1 | mean |")
print("|---|---|---|---|---|---|")
for kind in ["docs", "queries"]:
    m32, a = load(f"{work}/{kind}-f32.safetensors"); m16, b = load(f"{work}/{kind}-f16.safetensors")
    assert m32["ids"] == m16["ids"] and a.shape == b.shape, "the two encodings differ in texts or tokens"
    cos = np.empty(len(a))
    for s in range(0, len(a), 65536):
        x = a[s:s + 65536].astype(np.float64); y = b[s:s + 65536].astype(np.float64)
        cos[s:s + 65536] = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-30)
    print(f"| {kind} | {len(cos):,} | {cos.min():.7f} | {np.percentile(cos, 0.1):.7f} | {np.percentile(cos, 1):.7f} | {cos.mean():.8f} |")
qrels = {}
for line in open(qrels_path).read().splitlines()[1:]:
    q, d, r = line.split("\t")
    if int(r) > 0:
        qrels.setdefault(q, {})[d] = int(r)
def exact_ndcg(p):
    md, d = load(f"{work}/docs-{p}.safetensors"); mq, q = load(f"{work}/queries-{p}.safetensors")
    _, doff = load(f"{work}/docs-{p}.safetensors", "offsets"); _, qoff = load(f"{work}/queries-{p}.safetensors", "offsets")
    dids, qids = json.loads(md["ids"]), json.loads(mq["ids"])
    total, n = 0.0, 0
    for i, qid in enumerate(qids):
        if qid not in qrels:
            continue
        best = np.maximum.reduceat(d @ q[qoff[i]:qoff[i + 1]].T, doff[:-1].astype(np.int64), axis=0)
        top = np.argsort(-best.sum(1), kind="stable")[:10]
        rel = qrels[qid]
        dcg = sum(1.0 / np.log2(r + 2) for r, j in enumerate(top) if dids[j] in rel)
        total += dcg / sum(1.0 / np.log2(r + 2) for r in range(min(10, len(rel)))); n += 1
    return total / n, n
(e32, nq), (e16, _) = exact_ndcg("f32"), exact_ndcg("f16")
r = {p: json.load(open(f"{work}/eval-{p}.json")) for p in ["f32", "f16"]}
print()
print(f"| SciFact test ({nq} queries), k = 10 | f32 | f16 weights | Δ |")
print("|---|---|---|---|")
print(f"| nDCG@10, exact MaxSim on the raw vectors | {e32:.4f} | {e16:.4f} | {e16 - e32:+.4f} |")
for key in ["ndcg@10", "mrr@10"]:
    a, b = r["f32"][key], r["f16"][key]
    print(f"| {key}, PLAID, same codec | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
PY
echo
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
