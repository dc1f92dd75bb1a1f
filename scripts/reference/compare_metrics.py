#!/usr/bin/env python3
"""Score runs of both engines with one metric implementation and print a table.

    python scripts/reference/compare_metrics.py --qrels QRELS_TSV --row NAME:RUN_TSV:SUMMARY_JSON ...

Each --row names a run TSV (query id, doc id, rank, score) and a JSON summary with
"k", "build_s", "index_bytes", "vectors", "qps" (queries per second including query
encoding) and
optionally "check" ({"ndcg@10": x, "recall@100": y}: the figures the engine printed
itself; they must agree with this script's, else it exits non-zero).

Metrics (the same definitions as colwgpu's `src/eval/metrics.rs`, i.e. pytrec_eval's):
nDCG@10 with graded gains and log2(rank + 1) discount, the ideal ranking built from all
positive judgements of the query; Recall@100 = judged-relevant documents in the top
100 / all judged-relevant; averaged over every query with a positive judgement (a query
the run lacks scores 0).
"""
import argparse
import json
import math
import sys
from collections import defaultdict


def read_qrels(path):
    qrels = defaultdict(dict)
    with open(path) as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            if i == 0 and not parts[2].lstrip("-").isdigit():
                continue  # header
            qrels[parts[0]][parts[1]] = int(parts[2])
    return {q: j for q, j in qrels.items() if any(g > 0 for g in j.values())}


def read_run(path):
    hits = defaultdict(list)
    with open(path) as f:
        for line in f:
            qid, did, rank, _score = line.rstrip("\n").split("\t")
            hits[qid].append((int(rank), did))
    ranking = {}
    for qid, h in hits.items():
        seen, order = set(), []
        for _, d in sorted(h):
            if d not in seen:
                seen.add(d)
                order.append(d)
        ranking[qid] = order
    return ranking


def ndcg_at(ranking, judged, k):
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranking, judged, k):
    relevant = sum(1 for g in judged.values() if g > 0)
    found = sum(1 for d in ranking[:k] if judged.get(d, 0) > 0)
    return found / relevant if relevant else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qrels", required=True)
    ap.add_argument("--row", action="append", required=True, help="NAME:RUN_TSV:SUMMARY_JSON")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()

    qrels = read_qrels(args.qrels)
    rows, ok = [], True
    for spec in args.row:
        name, run_path, summary_path = spec.rsplit(":", 2)
        run = read_run(run_path)
        summary = json.load(open(summary_path))
        ndcg = sum(ndcg_at(run.get(q, []), j, 10) for q, j in qrels.items()) / len(qrels)
        r100 = sum(recall_at(run.get(q, []), j, 100) for q, j in qrels.items()) / len(qrels)
        for metric, mine in (("ndcg@10", ndcg), ("recall@100", r100)):
            theirs = summary.get("check", {}).get(metric)
            if theirs is not None and abs(theirs - mine) > 1e-6:
                print(f"{name}: {metric} {mine:.6f} here but {theirs:.6f} printed by the engine", file=sys.stderr)
                ok = False
        rows.append({"name": name, "ndcg@10": ndcg, "recall@100": r100, "queries": len(qrels), **summary})

    print("| engine | k | nDCG@10 | R@100 | index MB | bytes/vector | build s | queries/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        bpv = f"{r['index_bytes'] / r['vectors']:.1f}" if r.get("vectors") else ""
        r100 = f"{r['recall@100']:.3f}" if r.get("k", 100) >= 100 else "–"
        print(f"| {r['name']} | {r.get('k', '')} | {r['ndcg@10']:.4f} | {r100} | {r['index_bytes'] / 1e6:.1f} | {bpv} "
              f"| {r['build_s']:.0f} | {r['qps']:.1f} |")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
