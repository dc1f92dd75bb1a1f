#!/usr/bin/env bash
# Issue 14: `--precision bf16` against f32 on full SciFact, in one session.
#
#   1. encode speed, f32 vs bf16, on the same texts in the same run (the first
#      SPEED_DOCS documents and all queries; the two precisions alternate, each
#      measured twice, the better run kept), tokens/s;
#   2. the token-vector cosine between the f32 and the bf16 vectors of every
#      SciFact document and query (min / p0.1 / p1 / mean);
#   3. both indexes built from their vectors with the same knobs (nbits 2,
#      default centroids and seed), then nDCG@10 / MRR@10 (k = 10) on the judged test
#      queries (queries encoded now, at each index's precision), PLAID and
#      exhaustive, and the difference bf16 − f32.
#
# Usage: scripts/bf16_quality.sh [DATA_DIR] [WORK_DIR]
#   DATA_DIR default ../shared/data/scifact, WORK_DIR default /tmp/colwgpu-bf16.
#   The full-corpus vectors are written to WORK_DIR once and reused by later
#   runs; F32_DOCS / F32_QUERIES point at f32 vectors made earlier by
#   `colwgpu encode --device cpu` from the same data (they are then not
#   re-encoded; their model fingerprint is checked). SPEED_DOCS default 500.
# Needs a CPU with AMX-BF16 or AVX512-BF16, and python3 with numpy (PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/scifact}"
WORK="${2:-/tmp/colwgpu-bf16}"
SPEED_DOCS=${SPEED_DOCS:-500}
. scripts/lib/quality_setup.sh

# 1. Speed on the same texts, alternating precisions.
head -n "$SPEED_DOCS" "$DATA/corpus.jsonl" > "$WORK/speed-docs.jsonl"
speed() { # kind input precision → tokens/s
    "$BIN" encode --device cpu --precision "$3" --model "$MODEL" "--$1" "$2" --json \
        --out "$WORK/speed.safetensors" | "$PYTHON" -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["tokens_per_s"])'
}
declare -A best
for round in 1 2; do
    for kind in docs queries; do
        if [ "$kind" = docs ]; then input=$WORK/speed-docs.jsonl; else input=$DATA/queries.jsonl; fi
        for p in f32 bf16; do
            t=$(speed "$kind" "$input" "$p")
            echo "round $round: $kind $p $t tokens/s (load $(cut -d' ' -f1 /proc/loadavg))"
            if [ -z "${best[$kind-$p]:-}" ] || "$PYTHON" -c "import sys; sys.exit(not $t > ${best[$kind-$p]})"; then
                best[$kind-$p]=$t
            fi
        done
    done
done

# 2. Full-corpus vectors at both precisions.
F32_DOCS=${F32_DOCS:-$WORK/docs-f32.safetensors}
F32_QUERIES=${F32_QUERIES:-$WORK/queries-f32.safetensors}
encode() { # kind input precision out
    [ -f "$4" ] && return 0
    echo "encoding $1 ($3) → $4" >&2
    "$BIN" encode --device cpu --precision "$3" --model "$MODEL" "--$1" "$2" --json --out "$4.part.safetensors" >&2
    mv "$4.part.safetensors" "$4"
}
encode docs "$DATA/corpus.jsonl" f32 "$F32_DOCS"
encode queries "$DATA/queries.jsonl" f32 "$F32_QUERIES"
encode docs "$DATA/corpus.jsonl" bf16 "$WORK/docs-bf16.safetensors"
encode queries "$DATA/queries.jsonl" bf16 "$WORK/queries-bf16.safetensors"

# 3. Same knobs for both indexes; eval encodes the judged queries at the index's
# precision. bf16-shared: the bf16 vectors compressed with the f32 index's
# centroids and codec (--codec-from), so only the vectors differ, not the codec
# training (whose noise is far larger than bf16's rounding).
build() { # name vectors [extra index args]
    local name=$1 v=$2; shift 2
    [ -n "${REUSE_INDEXES:-}" ] && [ -d "$WORK/index-$name" ] && return 0
    "$BIN" index --vectors "$v" --model "$MODEL" --nbits 2 --index "$WORK/index-$name" --device cpu "$@" >&2
}
build f32 "$F32_DOCS"
build bf16 "$WORK/docs-bf16.safetensors"
build bf16-shared "$WORK/docs-bf16.safetensors" --codec-from "$WORK/index-f32"
for name in f32 bf16 bf16-shared; do
    p=${name%-shared}
    for mode in plaid exhaustive; do
        extra=(); [ $mode = exhaustive ] && extra=(--exhaustive)
        "$BIN" eval --index "$WORK/index-$name" --model "$MODEL" --queries "$DATA/queries.jsonl" \
            --qrels "$DATA/qrels/test.tsv" --device cpu --precision $p -k 10 "${extra[@]}" --json \
            | tail -1 > "$WORK/eval-$name-$mode.json"
    done
done

"$PYTHON" - "$F32_DOCS" "$WORK/docs-bf16.safetensors" "$F32_QUERIES" "$WORK/queries-bf16.safetensors" \
    "$WORK" "$DATA/qrels/test.tsv" "${best[docs-f32]}" "${best[docs-bf16]}" "${best[queries-f32]}" "${best[queries-bf16]}" "$SPEED_DOCS" <<'PY'
import json, struct, sys
import numpy as np

DTYPES = {"F32": np.float32, "U32": np.uint32, "I64": np.int64, "U64": np.uint64, "I32": np.int32}

def load_tensor(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    body = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    t = header[name]
    a, b = t["data_offsets"]
    return header["__metadata__"], np.frombuffer(body[a:b], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])

def load(path):
    return load_tensor(path, "vectors")

fd, bd, fq, bq, work, qrels_path = sys.argv[1:7]
sd32, sd16, sq32, sq16, ndocs = map(float, sys.argv[7:12])
print()
print("| encode (same texts, same run, CPU) | f32 tokens/s | bf16 tokens/s | bf16 / f32 |")
print("|---|---|---|---|")
print(f"| SciFact documents (first {int(ndocs)}) | {sd32:,.0f} | {sd16:,.0f} | {sd16 / sd32:.2f}× |")
print(f"| SciFact queries (1,109) | {sq32:,.0f} | {sq16:,.0f} | {sq16 / sq32:.2f}× |")
print()
print("| token vectors, cosine f32 vs bf16 | vectors | min | p0.1 | p1 | mean |")
print("|---|---|---|---|---|---|")
for name, p32, p16 in [("documents", fd, bd), ("queries", fq, bq)]:
    m32, a = load(p32)
    m16, b = load(p16)
    assert m32["model_fingerprint"] == m16["model_fingerprint"], (m32["model_fingerprint"], m16["model_fingerprint"])
    assert m32["ids"] == m16["ids"] and a.shape == b.shape, "the two encodings differ in texts or tokens"
    cos = np.empty(len(a), dtype=np.float64)
    for s in range(0, len(a), 65536):
        x = a[s:s + 65536].astype(np.float64); y = b[s:s + 65536].astype(np.float64)
        cos[s:s + 65536] = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-30)
    print(f"| {name} | {len(cos):,} | {cos.min():.5f} | {np.percentile(cos, 0.1):.5f} | {np.percentile(cos, 1):.5f} | {cos.mean():.6f} |")
print()
qrels = {}
for line in open(qrels_path).read().splitlines()[1:]:
    q, d, r = line.split("\t")
    if int(r) > 0:
        qrels.setdefault(q, {})[d] = int(r)

def exact_ndcg(docs_path, queries_path):
    """nDCG@10 (binary gains, as SciFact's qrels) of exact MaxSim on the raw vectors."""
    md, d = load(docs_path)
    mq, q = load(queries_path)
    _, doff = load_tensor(docs_path, "offsets")
    _, qoff = load_tensor(queries_path, "offsets")
    dids, qids = json.loads(md["ids"]), json.loads(mq["ids"])
    total = 0.0; n = 0
    for i, qid in enumerate(qids):
        if qid not in qrels:
            continue
        sim = d @ q[qoff[i]:qoff[i + 1]].T                      # [doc tokens, query tokens]
        best = np.maximum.reduceat(sim, doff[:-1].astype(np.int64), axis=0)
        scores = best.sum(1)
        top = np.argsort(-scores, kind="stable")[:10]
        rel = qrels[qid]
        dcg = sum(1.0 / np.log2(r + 2) for r, j in enumerate(top) if dids[j] in rel)
        idcg = sum(1.0 / np.log2(r + 2) for r in range(min(10, len(rel))))
        total += dcg / idcg; n += 1
    return total / n, n

(e32, nq), (e16, _) = exact_ndcg(fd, fq), exact_ndcg(bd, bq)
print(f"| SciFact test ({nq} queries), k = 10 | f32 nDCG@10 | bf16 nDCG@10 | Δ | f32 MRR@10 | bf16 MRR@10 | Δ |")
print("|---|---|---|---|---|---|---|")
print(f"| exact MaxSim on the raw vectors (numpy) | {e32:.4f} | {e16:.4f} | {e16 - e32:+.4f} | | | |")
for name, label in [("bf16", "own codec (trained on its vectors)"), ("bf16-shared", "the f32 index's codec")]:
    for mode in ["plaid", "exhaustive"]:
        r = {p: json.load(open(f"{work}/eval-{p}-{mode}.json")) for p in ["f32", name]}
        n32, n16 = r["f32"]["ndcg@10"], r[name]["ndcg@10"]
        c32, c16 = r["f32"]["mrr@10"], r[name]["mrr@10"]
        print(f"| index, {mode}, bf16 with {label} | {n32:.4f} | {n16:.4f} | {n16 - n32:+.4f} | {c32:.4f} | {c16:.4f} | {c16 - c32:+.4f} |")
PY
echo
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
