#!/usr/bin/env python3
"""Times the PyTorch reference ColBERT encoder (scripts/reference/colbert_reference.py).

    python scripts/reference/bench_reference.py --model models/colbert-minilm \\
        --corpus DATA/corpus.jsonl --queries DATA/queries.jsonl \\
        --docs 500 --nqueries 300 --batch 32 [--threads 2]

Texts are the ones the Rust CLI (`colwgpu encode --limit N`) takes: the first N lines of
corpus.jsonl (text = title + " " + text, or just text when the title is empty) and the
first M lines of queries.jsonl ("text" field).

Method: torch at --threads intra-op threads, torch.inference_mode(), f32, attention via
--attn (default sdpa = torch's fused scaled_dot_product_attention, transformers' default;
the parity fixtures use eager, the two agree to ~1e-6).
Texts are sorted by token length (longest first) and cut into batches of --batch, so each
batch is padded only to its own longest member, the way a serious implementation batches
(queries all have query_length positions, so sorting does not matter for them). One
batch is encoded first as an untimed warm-up. The timed region is the whole encode call:
tokenisation, padding, the BERT forward, projection, normalisation and (documents) the
skiplist filter.

Prints one JSON line per kind:
  {"impl":"pytorch","kind":"docs"|"queries","texts":N,"tokens":T,"seconds":s,"tokens_per_s":x,...}
tokens = sum of real (unpadded) sequence lengths incl. CLS, marker and SEP; a query
counts query_length tokens, since the [MASK] expansion positions are computed too.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from colbert_reference import ColbertReference  # noqa: E402


def doc_text(row: dict) -> str:
    title = (row.get("title") or "").strip()
    return f"{title} {row['text']}" if title else row["text"]


def first_lines(path: str, n: int, to_text):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(out) == n:
                break
            if line.strip():
                out.append(to_text(json.loads(line)))
    return out


def bench(kind: str, texts, encode, tokens: int, batch: int, threads: int, attn: str, warmup_texts):
    encode(warmup_texts)  # untimed warm-up batch
    t0 = time.perf_counter()
    encode(texts)
    dt = time.perf_counter() - t0
    print(json.dumps({
        "impl": "pytorch",
        "kind": kind,
        "texts": len(texts),
        "tokens": tokens,
        "seconds": round(dt, 4),
        "tokens_per_s": round(tokens / dt, 1),
        "batch": batch,
        "threads": threads,
        "sorted_by_length": True,
        "attn": attn,
        "torch": torch.__version__,
    }), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--nqueries", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                    help="transformers attention implementation (default sdpa, its own default)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    ref = ColbertReference(a.model, threads=a.threads, attn_implementation=a.attn)

    if a.docs > 0:
        docs = first_lines(a.corpus, a.docs, doc_text)
        tokens = sum(len(ref.document_ids(t)) for t in docs)
        bench("docs", docs, lambda ts: ref.encode_documents(ts, batch_size=a.batch, sort_by_length=True),
              tokens, a.batch, a.threads, a.attn, docs[: a.batch])
    if a.nqueries > 0:
        queries = first_lines(a.queries, a.nqueries, lambda r: r["text"])
        tokens = ref.query_length * len(queries)
        bench("queries", queries, lambda ts: ref.encode_queries(ts, batch_size=a.batch),
              tokens, a.batch, a.threads, a.attn, queries[: a.batch])


if __name__ == "__main__":
    main()
