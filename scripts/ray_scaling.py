#!/usr/bin/env python3
"""Scale-out on Ray, measured: build time and queries/s for 1, 2 and 4 shards of a
corpus, and whether the sharded top-k equals one index's over the same documents.

Inputs are the safetensors files `colwgpu encode` writes (documents and queries),
so every shard count indexes identical vectors and the timings are indexing and
search, not encoding:

    colwgpu encode --model models/colbert-minilm --docs ../shared/data/scifact/corpus.jsonl --out docs.st
    colwgpu encode --model models/colbert-minilm --queries ../shared/data/scifact/queries.jsonl --out q.st
    python scripts/ray_scaling.py --docs docs.st --queries q.st --work /tmp/ray-scaling [--cpus 2]

Needs the colwgpu wheel and ray installed (scripts/test-python.sh builds the wheel).
Prints a markdown table.
"""

import argparse
import json
import os
import shutil
import struct
import time

import numpy as np
import ray

import colwgpu
from colwgpu.distributed import ShardedIndex, build_sharded


def read_vectors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]

    def tensor(name, dtype):
        t = header[name]
        a, b = t["data_offsets"]
        return np.frombuffer(body[a:b], dtype=dtype).reshape(t["shape"])

    vectors = tensor("vectors", np.float32)
    offsets = tensor("offsets", np.int64)
    ids = json.loads(header["__metadata__"]["ids"])
    blocks = [vectors[offsets[i] : offsets[i + 1]] for i in range(len(ids))]
    return ids, blocks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reuse", action="store_true",
                    help="search the shards and whole index an earlier run left in --work (no builds)")
    ap.add_argument("--exhaustive-check", type=int, default=300,
                    help="queries whose exhaustive top-k is compared too")
    a = ap.parse_args()

    ids, docs = read_vectors(a.docs)
    _, queries = read_vectors(a.queries)
    print(f"{len(ids)} documents, {sum(len(d) for d in docs)} vectors; {len(queries)} queries; "
          f"ray local cluster with {a.cpus} CPUs; cpu: {cpu_name()}")
    ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if not a.reuse:
        shutil.rmtree(a.work, ignore_errors=True)
        os.makedirs(a.work)
    rows = []
    results = {}
    for n in [int(x) for x in a.shards.split(",")]:
        path = os.path.join(a.work, f"shards-{n}")
        if a.reuse:
            m = json.load(open(os.path.join(path, "shards.json")))
            build = m["seconds"]
        else:
            start = time.perf_counter()
            m = build_sharded(path, None, docs, ids, num_shards=n, device=a.device)
            build = time.perf_counter() - start
        index = ShardedIndex(path, device=a.device)
        index.search(queries[:8], k=a.k)  # warm-up: actors open their shards
        start = time.perf_counter()
        hits = index.search(queries, k=a.k)
        qps = len(queries) / (time.perf_counter() - start)
        exhaustive = index.search(queries[: a.exhaustive_check], k=a.k, exhaustive=True)
        results[n] = (path, hits, exhaustive)
        rows.append((n, build, m["codec_seconds"], max(s["seconds"] for s in m["shards"]), qps))
        index.close()
    # The reference: one index over all documents with the same codec as the
    # last sharded build (its codec was trained on the same seeded sample).
    last_n = max(results)
    path, hits, exhaustive = results[last_n]
    whole_path = os.path.join(a.work, "whole")
    if a.reuse:
        whole = colwgpu.Index.open(whole_path, device=a.device)
    else:
        whole = colwgpu.Index.build(whole_path, None, docs, ids,
                                    codec_from=os.path.join(path, "codec"), device=a.device)
    whole.search(queries[:8], k=a.k)
    start = time.perf_counter()
    want = whole.search(queries, k=a.k)
    whole_qps = len(queries) / (time.perf_counter() - start)
    want_exhaustive = whole.search(queries[: a.exhaustive_check], k=a.k, exhaustive=True)
    same = sum(g == w for g, w in zip(hits, want))
    same_ids = sum([h[0] for h in g] == [h[0] for h in w] for g, w in zip(hits, want))
    same_exhaustive = sum(g == w for g, w in zip(exhaustive, want_exhaustive))
    print()
    print("| shards | build s (all) | codec s | slowest shard s | queries/s |")
    print("|---|---|---|---|---|")
    for n, b, c, s, q in rows:
        print(f"| {n} | {b:.1f} | {c:.1f} | {s:.1f} | {q:.1f} |")
    print()
    print(f"one index, same process: {whole_qps:.1f} queries/s")
    print(f"{last_n}-shard PLAID top-{a.k} equal to one index's (ids and scores): {same}/{len(queries)} "
          f"queries (ids alone: {same_ids}/{len(queries)})")
    print(f"{last_n}-shard exhaustive top-{a.k} equal to one index's: {same_exhaustive}/"
          f"{len(want_exhaustive)} queries")
    ray.shutdown()


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
