#!/usr/bin/env python3
"""Cuts the small real data slices that the tests, benches and the README example
read, so that the repository passes its tests with nothing beside it.

    python3 scripts/data/make_test_slices.py [--data ../shared/data] [--check]

Reads the full datasets (BEIR layout, each with its own PROVENANCE.md) under --data
and writes, deterministically (standard library only, no randomness):

  tests/data/scifact-1k/      1,000 SciFact documents: every document judged in
                              qrels/test.tsv (in qrels order, first occurrence), then
                              the rest in corpus order until 1,000; all 300 test
                              queries (queries.jsonl order); qrels/test.tsv unchanged
                              (every judged document is in the slice).
  tests/data/trec-dl19-qrels/ the TREC DL 2019 subset's qrels/test.tsv and
                              queries.jsonl, unchanged (no corpus).
  examples/scifact-mini/      the README example's sample: the first 20 test queries
                              (in qrels order), every document they cite, then corpus
                              documents in corpus order up to 120.

Records keep `_id`, `title` (documents) and `text`; `metadata` is dropped. One JSON
object per line as json.dumps writes it (", " and ": " separators, non-ASCII
escaped). With --check nothing is written: the script fails if any committed file
differs from what it would write.
"""
import argparse
import hashlib
import json
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels_lines(path):
    """(header or None, [(query, doc, score, raw line)])"""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    header = None
    if lines and lines[0].startswith("query-id"):
        header, lines = lines[0], lines[1:]
    rows = []
    for line in lines:
        q, d, s = line.split("\t")
        rows.append((q, d, int(s), line))
    return header, rows


def doc_record(row):
    return {"_id": str(row["_id"]), "title": row.get("title", ""), "text": row["text"]}


def query_record(row):
    return {"_id": str(row["_id"]), "text": row["text"]}


def jsonl(records):
    return "".join(json.dumps(r) + "\n" for r in records)


def qrels_text(header, rows):
    out = [header] if header else []
    out += [r[3] for r in rows]
    return "\n".join(out) + "\n"


def scifact_slice(src, n_queries, n_docs):
    """Documents judged for the first n_queries test queries (None: all), then others."""
    corpus = read_jsonl(os.path.join(src, "corpus.jsonl"))
    queries = read_jsonl(os.path.join(src, "queries.jsonl"))
    header, rows = read_qrels_lines(os.path.join(src, "qrels", "test.tsv"))
    wanted_q = []
    for q, _, _, _ in rows:
        if q not in wanted_q:
            wanted_q.append(q)
    if n_queries is not None:
        wanted_q = wanted_q[:n_queries]
    keep_q = set(wanted_q)
    rows = [r for r in rows if r[0] in keep_q]
    by_id = {str(r["_id"]): r for r in corpus}
    picked = []
    for _, d, _, _ in rows:
        if d not in picked:
            picked.append(d)
    assert len(picked) <= n_docs, f"{len(picked)} judged documents exceed {n_docs}"
    chosen = set(picked)
    for r in corpus:
        if len(picked) == n_docs:
            break
        if str(r["_id"]) not in chosen:
            picked.append(str(r["_id"]))
            chosen.add(str(r["_id"]))
    docs = [doc_record(by_id[d]) for d in picked]
    if n_queries is None:
        # Every test query, in queries.jsonl order.
        qs = [query_record(q) for q in queries if str(q["_id"]) in keep_q]
    else:
        qby = {str(q["_id"]): q for q in queries}
        qs = [query_record(qby[q]) for q in wanted_q]
    assert len(qs) == len(keep_q)
    return {
        "corpus.jsonl": jsonl(docs),
        "queries.jsonl": jsonl(qs),
        "qrels/test.tsv": qrels_text(header, rows),
    }


def copy_files(src, names):
    out = {}
    for n in names:
        with open(os.path.join(src, n), encoding="utf-8", newline="") as f:
            out[n] = f.read()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    a = ap.parse_args()

    slices = {
        "tests/data/scifact-1k": scifact_slice(os.path.join(a.data, "scifact"), None, 1000),
        "tests/data/trec-dl19-qrels": copy_files(
            os.path.join(a.data, "trec-dl19-passage-subset"), ["qrels/test.tsv", "queries.jsonl"]
        ),
        "examples/scifact-mini": scifact_slice(os.path.join(a.data, "scifact"), 20, 120),
    }
    bad = 0
    for folder, files in slices.items():
        for name, text in files.items():
            path = os.path.join(ROOT, folder, name)
            data = text.encode("utf-8")
            digest = hashlib.sha256(data).hexdigest()
            if a.check:
                try:
                    with open(path, "rb") as f:
                        same = f.read() == data
                except FileNotFoundError:
                    same = False
                bad += not same
                print(f"{'ok ' if same else 'DIFFERS'} {digest}  {folder}/{name}")
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
                print(f"{digest}  {folder}/{name} ({len(data)} bytes)")
    if bad:
        sys.exit(f"{bad} file(s) differ from what the script writes")


if __name__ == "__main__":
    main()
