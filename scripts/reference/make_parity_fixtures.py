#!/usr/bin/env python3
"""Writes the golden parity fixtures for tests/parity.rs from the PyTorch reference.

    python scripts/reference/make_parity_fixtures.py [--model models/colbert-minilm]
        [--data tests/data/scifact-1k] [--out tests/fixtures/parity]

Needs torch, transformers and pylate (a CPU-only venv outside the repository, e.g.
`python3 -m venv /work/.venv-ref && /work/.venv-ref/bin/pip install torch transformers
pylate safetensors numpy`).

Texts: the first 30 documents of corpus.jsonl (file order; text = title + " " + text,
or just text when the title is empty) and the queries of the first 30 unique query
ids of qrels/test.tsv (file order; text = the "text" field of queries.jsonl). The
default data is the committed slice tests/data/scifact-1k, so the fixtures can be
regenerated from the repository alone.

Outputs (little-endian):
  scifact_parity.json          model, its fingerprint (the CRC-32 that
                               colwgpu::index::ModelInfo::from_dir computes), the
                               reference's package versions, the PyLate cross-check's
                               result, ids and texts, notes
  scifact_parity.safetensors
    query_token_ids     I32 [nq, query_length]
    query_vectors       F32 [nq * query_length, dim]
    doc_token_ids       I32 [sum of doc lengths]   full CLS..SEP ids, before the skiplist
    doc_token_offsets   I32 [nd + 1]
    doc_vectors         F32 [sum of kept tokens, dim]  after the skiplist
    doc_vector_offsets  I32 [nd + 1]
    debug_q0_embeddings F32 [query_length, hidden]  embeddings module output (incl. LayerNorm)
    debug_q0_layer{i}   F32 [query_length, hidden]  encoder layer i output (hidden_states[i+1])

Every text is encoded on its own (batch of one, so no padding is involved).

The PyLate cross-check is part of generating them: the same texts encoded by
pylate.models.ColBERT from the same checkpoint must give the same token ids and
vectors within 1e-5, or nothing is written.
"""
import argparse
import json
import os
import platform
import struct
import sys
import zlib

import numpy as np
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from colbert_reference import ColbertReference, pylate_cross_check  # noqa: E402

N_DOCS = 30
N_QUERIES = 30
PYLATE_TOLERANCE = 1e-5

# The files colwgpu::index::ModelInfo::from_dir hashes, in its order.
MODEL_FILES = [
    "config.json",
    "config_sentence_transformers.json",
    "tokenizer.json",
    "model.safetensors",
    "1_Dense/config.json",
    "1_Dense/model.safetensors",
]


def model_fingerprint(model_dir: str) -> str:
    """The CRC-32 colwgpu's ModelInfo::from_dir computes: for each model file that
    exists, its relative name, its size (u64 little-endian) and its contents."""
    crc, found = 0, 0
    for name in MODEL_FILES:
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            continue
        found += 1
        with open(path, "rb") as f:
            data = f.read()
        crc = zlib.crc32(name.encode("utf-8"), crc)
        crc = zlib.crc32(struct.pack("<Q", len(data)), crc)
        crc = zlib.crc32(data, crc)
    assert found, f"no model files in {model_dir}"
    return f"crc32:{crc:08x}"


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ["torch", "transformers", "tokenizers", "pylate", "sentence-transformers", "numpy", "safetensors"]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def doc_text(row: dict) -> str:
    title = (row.get("title") or "").strip()
    return f"{title} {row['text']}" if title else row["text"]


def load_docs(path: str, n: int):
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            ids.append(str(row["_id"]))
            texts.append(doc_text(row))
            if len(ids) == n:
                break
    return ids, texts


def load_queries(data_dir: str, n: int):
    wanted = []
    with open(os.path.join(data_dir, "qrels", "test.tsv"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and parts[0] == "query-id":
                continue
            if parts[0] and parts[0] not in wanted:
                wanted.append(parts[0])
            if len(wanted) == n:
                break
    by_id = {}
    with open(os.path.join(data_dir, "queries.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                by_id[str(row["_id"])] = row["text"]
    return wanted, [by_id[q] for q in wanted]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(root, "models", "colbert-minilm"))
    ap.add_argument("--data", default=os.path.join(root, "tests", "data", "scifact-1k"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "parity"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    ref = ColbertReference(a.model, threads=a.threads)

    # Sanity: the WordPiece ids the Rust tokenizer tests also pin.
    hello = [ref.cls_id] + ref.text_ids("Hello, world!") + [ref.sep_id]
    assert hello == [101, 7592, 1010, 2088, 999, 102], hello
    assert (ref.query_marker_id, ref.document_marker_id, ref.mask_id, ref.pad_id) == (1, 2, 103, 0)
    print(f"sanity: 'Hello, world!' -> {hello}")

    doc_ids, docs = load_docs(os.path.join(a.data, "corpus.jsonl"), N_DOCS)
    query_ids, queries = load_queries(a.data, N_QUERIES)
    assert len(docs) == N_DOCS and len(queries) == N_QUERIES

    # Sanity: raw `tokenizers` ids == transformers' tokenizer with truncation/padding off.
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(a.model)
    for t in docs + queries:
        want = hf_tok(t, add_special_tokens=True, truncation=False, padding=False)["input_ids"]
        got = [ref.cls_id] + ref.text_ids(t) + [ref.sep_id]
        assert got == want, (t[:60], got[:10], want[:10])
    print(f"sanity: tokenizers ids == transformers AutoTokenizer ids on all {len(docs) + len(queries)} texts")

    # Batch of one: no padding anywhere in the golden numbers.
    q_enc = ref.encode_queries(queries, batch_size=1)
    d_enc = ref.encode_documents(docs, batch_size=1)

    # Sanity: a padded, length-sorted batch agrees with the batch-of-one numbers.
    q_b = ref.encode_queries(queries, batch_size=32)
    d_b = ref.encode_documents(docs, batch_size=32)
    dq = max(float(np.abs(x.vectors - y.vectors).max()) for x, y in zip(q_enc, q_b))
    dd = max(float(np.abs(x.vectors - y.vectors).max()) for x, y in zip(d_enc, d_b))
    print(f"sanity: batch-of-one vs padded batch of 32: queries max |diff| {dq:.2e}, documents {dd:.2e}")
    assert dq < 1e-4 and dd < 1e-4

    dim = ref.dim
    ql = ref.query_length
    query_token_ids = np.stack([q.ids for q in q_enc]).astype("<i4")
    query_vectors = np.concatenate([q.vectors for q in q_enc]).astype("<f4")
    doc_token_ids = np.concatenate([d.ids for d in d_enc]).astype("<i4")
    doc_token_offsets = np.concatenate([[0], np.cumsum([len(d.ids) for d in d_enc])]).astype("<i4")
    doc_vectors = np.concatenate([d.vectors for d in d_enc]).astype("<f4")
    doc_vector_offsets = np.concatenate([[0], np.cumsum([len(d.vectors) for d in d_enc])]).astype("<i4")

    tensors = {
        "query_token_ids": query_token_ids,
        "query_vectors": query_vectors,
        "doc_token_ids": doc_token_ids,
        "doc_token_offsets": doc_token_offsets,
        "doc_vectors": doc_vectors,
        "doc_vector_offsets": doc_vector_offsets,
    }
    hs = ref.query_hidden_states(queries[0])
    tensors["debug_q0_embeddings"] = hs[0].astype("<f4")
    for i, h in enumerate(hs[1:]):
        tensors[f"debug_q0_layer{i}"] = h.astype("<f4")
    # The last hidden state projected and normalised must be the stored query 0 vectors.
    v0 = hs[-1] @ ref.linear.numpy().T
    v0 /= np.maximum(np.linalg.norm(v0, axis=-1, keepdims=True), 1e-12)
    d0 = float(np.abs(v0 - q_enc[0].vectors).max())
    print(f"sanity: debug_q0_layer{len(hs) - 2} -> projection -> norm vs query_vectors[0]: max |diff| {d0:.2e}")
    assert d0 < 1e-5
    assert len(hs) - 1 == ref.model.config.num_hidden_layers

    # The PyLate cross-check: same checkpoint, same texts, through pylate.models.ColBERT.
    cross = pylate_cross_check(ref, queries, docs)
    if cross is None:
        sys.exit("pylate is required: the cross-check is part of the fixtures")
    print("pylate cross-check:", json.dumps(cross))
    cross_ok = (
        cross["query_ids_equal"] == f"{N_QUERIES}/{N_QUERIES}"
        and cross["doc_ids_equal"] == f"{N_DOCS}/{N_DOCS}"
        and cross["query_shape_mismatches"] == 0
        and cross["doc_shape_mismatches"] == 0
        and cross["query_max_abs_diff"] <= PYLATE_TOLERANCE
        and cross["doc_max_abs_diff"] <= PYLATE_TOLERANCE
    )
    cross["tolerance"] = PYLATE_TOLERANCE
    cross["passed"] = cross_ok
    if not cross_ok:
        sys.exit(f"the PyLate cross-check failed (tolerance {PYLATE_TOLERANCE}): nothing written")

    import torch
    import transformers

    fingerprint = model_fingerprint(a.model)
    vers = versions()
    data_rel = os.path.relpath(os.path.abspath(a.data), root)
    n_trunc = sum(1 for d in d_enc if len(d.ids) == ref.document_length)
    notes = (
        "Golden ColBERT encodings from scripts/reference/make_parity_fixtures.py "
        f"(PyTorch {torch.__version__}, transformers {transformers.__version__}, BertModel eval, f32, "
        "eager attention, each text encoded alone). "
        f"Docs: first {N_DOCS} lines of {data_rel}/corpus.jsonl, text = title + ' ' + text. "
        f"Queries: first {N_QUERIES} unique query ids of qrels/test.tsv (file order). "
        f"Query = [CLS]=101 [unused0]=1 tokens [SEP]=102, padded to {ql} with [MASK]=103 "
        "(attention 0 on the expansion, every position has a vector). "
        f"Document = [CLS] [unused1]=2 tokens [SEP] cut at {ref.document_length} tokens "
        f"({n_trunc} of {N_DOCS} docs hit the cap); doc_token_ids hold the full sequence, doc_vectors "
        f"only the tokens outside the punctuation skiplist {ref.skiplist_ids}. "
        f"Vectors = L2-normalise(last_hidden_state @ 1_Dense linear.weight.T), dim {dim}. "
        "debug_q0_embeddings = embeddings module output (after its LayerNorm) for query 0; "
        "debug_q0_layer{i} = output of encoder layer i (hidden_states[i+1]), all [32, 384]."
    )

    os.makedirs(a.out, exist_ok=True)
    st_path = os.path.join(a.out, "scifact_parity.safetensors")
    js_path = os.path.join(a.out, "scifact_parity.json")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, st_path,
              metadata={"model": "colbert-minilm", "model_fingerprint": fingerprint,
                        "generator": "scripts/reference/make_parity_fixtures.py",
                        "reference_versions": json.dumps(vers, sort_keys=True)})
    with open(js_path, "w", encoding="utf-8") as f:
        json.dump({"model": "colbert-minilm", "model_fingerprint": fingerprint,
                   "generator": "scripts/reference/make_parity_fixtures.py", "data": data_rel,
                   "reference_versions": vers, "pylate_cross_check": cross,
                   "query_ids": query_ids, "queries": queries,
                   "doc_ids": doc_ids, "docs": docs, "notes": notes}, f, indent=1, ensure_ascii=False)
        f.write("\n")

    # Reload and check.
    back = load_file(st_path)
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and np.array_equal(back[k], tensors[k]), k
    with open(js_path, encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["queries"] == queries and meta["docs"] == docs
    assert meta["model_fingerprint"] == fingerprint and meta["pylate_cross_check"]["passed"]
    print("reloaded:")
    for k, v in back.items():
        print(f"  {k:22s} {str(v.dtype):8s} {list(v.shape)}")
    assert back["query_token_ids"].shape == (N_QUERIES, ql)
    assert back["query_vectors"].shape == (N_QUERIES * ql, dim)
    assert back["doc_token_offsets"][-1] == back["doc_token_ids"].shape[0]
    assert back["doc_vector_offsets"][-1] == back["doc_vectors"].shape[0]
    norms = np.linalg.norm(back["doc_vectors"], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    print(f"sizes: {st_path} {os.path.getsize(st_path)} bytes, {js_path} {os.path.getsize(js_path)} bytes")
    print(f"docs: {int(back['doc_token_offsets'][-1])} tokens, {int(back['doc_vector_offsets'][-1])} kept; "
          f"queries: {N_QUERIES} x {ql}")
    print(f"model {fingerprint}; versions {json.dumps(vers)}")


if __name__ == "__main__":
    main()
