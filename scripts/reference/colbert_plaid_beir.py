#!/usr/bin/env python3
"""Index a BEIR corpus and search its judged queries with the reference PLAID
implementation (`colbert-ai` from PyPI, stanford ColBERT), timing both steps.

    python scripts/reference/colbert_plaid_beir.py --model STANFORD_DIR --data BEIR_DIR \
        --out WORK_DIR [--docs N] [--nbits 2] [-k 10 -k 100] [--kmeans-iters 4]

STANFORD_DIR is a checkpoint in the stanford layout (`to_stanford_layout.py` writes one
from models/colbert-minilm); colwgpu reads the same directory, so both engines run the
same weights. Documents are `title + " " + text` as colwgpu reads them; with --docs N only
the first N corpus records are indexed (and only queries judged on them are run).

Writes to WORK_DIR:
  run_k{K}.tsv      query id, doc id, rank, score (one line per hit), as `colwgpu eval --run`
  summary.json      {"build_s", "index_bytes", "vectors", "queries", "search": {K: {"seconds", "qps"}}}
Metrics are computed by `compare_metrics.py`, one implementation for both engines' runs.

colbert-ai runs on the CPU here (no CUDA); torch uses its default thread count unless
--threads is given.
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


def read_corpus(path: Path, limit):
    ids, texts = [], []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            title = (rec.get("title") or "").strip()
            text = rec.get("text") or ""
            ids.append(str(rec["_id"]))
            texts.append(f"{title} {text}" if title else text)
            if limit and len(ids) >= limit:
                break
    return ids, texts


def read_judged_queries(data: Path, split: str, doc_ids):
    judged = set()
    with open(data / "qrels" / f"{split}.tsv") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            qid, did, score = parts[0], parts[1], int(parts[2])
            if score > 0 and did in doc_ids:
                judged.add(qid)
    queries = {}
    with open(data / "queries.jsonl") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if str(rec["_id"]) in judged:
                    queries[str(rec["_id"])] = rec["text"]
    return queries


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--docs", type=int, default=0, help="index only the first N documents (0 = all)")
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--kmeans-iters", type=int, default=4)
    ap.add_argument("-k", type=int, action="append", help="results per query (repeatable; default 10 and 100)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    ks = args.k or [10, 100]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from colbert import Indexer, Searcher
    from colbert.infra import ColBERTConfig, Run, RunConfig

    doc_ids, texts = read_corpus(args.data / "corpus.jsonl", args.docs)
    queries = read_judged_queries(args.data, args.split, set(doc_ids))
    print(f"reference: {len(texts)} documents, {len(queries)} judged queries, torch threads {torch.get_num_threads()}",
          file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    root = args.out / "colbert-ai"
    shutil.rmtree(root, ignore_errors=True)
    summary = {"engine": "colbert-ai", "documents": len(texts), "queries": len(queries), "search": {}}
    with Run().context(RunConfig(nranks=1, experiment="scifact", root=str(root), avoid_fork_if_possible=True)):
        config = ColBERTConfig(nbits=args.nbits, doc_maxlen=180, query_maxlen=32, kmeans_niters=args.kmeans_iters,
                               avoid_fork_if_possible=True)
        t0 = time.perf_counter()
        indexer = Indexer(checkpoint=str(args.model), config=config, verbose=1)
        index_path = Path(indexer.index(name="index", collection=texts, overwrite=True))
        summary["build_s"] = time.perf_counter() - t0
        summary["index_bytes"] = dir_bytes(index_path)
        summary["vectors"] = json.loads((index_path / "metadata.json").read_text()).get("num_embeddings")
        print(f"reference: built {index_path} in {summary['build_s']:.1f} s, {summary['index_bytes']} bytes",
              file=sys.stderr)

        for k in ks:
            # A fresh searcher per k: colbert-ai fixes ncells / threshold / ndocs from the
            # first k it sees (the PLAID defaults for that k).
            searcher = Searcher(index="index", config=config, collection=texts, verbose=1)
            warm = next(iter(queries.values()))
            searcher.search(warm, k=k)  # load / compile outside the timed loop
            t0 = time.perf_counter()
            ranking = searcher.search_all(queries, k=k)
            seconds = time.perf_counter() - t0
            summary["search"][str(k)] = {"seconds": seconds, "qps": len(queries) / seconds}
            with open(args.out / f"run_k{k}.tsv", "w") as f:
                for qid, hits in ranking.todict().items():
                    for pid, rank, score in hits:
                        f.write(f"{qid}\t{doc_ids[pid]}\t{rank}\t{score}\n")
            print(f"reference: k={k}: {len(queries)} queries in {seconds:.2f} s", file=sys.stderr)

    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # colbert-ai compiles its C++ extensions with the venv's ninja on first use.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    main()
