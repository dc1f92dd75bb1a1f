"""The Python package against the committed reference fixtures (no torch needed)
and the engine's own exact search. Run by scripts/test.sh after the wheel is
built with maturin and installed into a virtual environment."""

import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import colwgpu

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "colbert-minilm"
PARITY = ROOT / "tests" / "fixtures" / "parity"
SCIFACT = ROOT / "tests" / "data" / "scifact-1k"
# The Rust parity test's CPU tolerance (tests/parity.rs), measured ~5e-7.
CPU_TOLERANCE = 1e-5

pytestmark = pytest.mark.skipif(
    not (MODEL / "config.json").exists(),
    reason="the model is fetched by scripts/test.sh (models/fetch-model.sh)",
)


def read_safetensors(path):
    """Tensors of a safetensors file, with numpy only."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    dtypes = {"F32": np.float32, "I32": np.int32}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=dtypes[t["dtype"]]).reshape(
            t["shape"]
        )
    return out


@pytest.fixture(scope="module")
def fixture():
    meta = json.loads((PARITY / "scifact_parity.json").read_text())
    return meta, read_safetensors(PARITY / "scifact_parity.safetensors")


@pytest.fixture(scope="module")
def model():
    return colwgpu.ColBERT(MODEL, device="cpu")


@pytest.fixture(scope="module")
def corpus():
    docs = [json.loads(l) for l in (SCIFACT / "corpus.jsonl").read_text().splitlines()[:120]]
    ids = [d["_id"] for d in docs]
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
    return ids, texts


@pytest.fixture(scope="module")
def built(tmp_path_factory, model, corpus):
    ids, texts = corpus
    path = tmp_path_factory.mktemp("idx") / "scifact.index"
    return colwgpu.Index.build(path, model, texts, ids, nbits=2)


def test_queries_match_reference(fixture, model):
    meta, t = fixture
    got = model.encode(meta["queries"], is_query=True)
    want = t["query_vectors"].reshape(len(meta["queries"]), -1, 128)
    assert len(got) == len(meta["queries"])
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and g.shape == w.shape
        assert np.abs(g - w).max() <= CPU_TOLERANCE


def test_documents_match_reference(fixture, model):
    meta, t = fixture
    docs = meta["docs"][:10]
    got = model.encode(docs)
    off = t["doc_vector_offsets"]
    for i, g in enumerate(got):
        w = t["doc_vectors"][off[i] : off[i + 1]]
        assert g.shape == w.shape, f"document {i}"
        assert np.abs(g - w).max() <= CPU_TOLERANCE, f"document {i}"
    # One str in, one array out. Without AMX, alone it runs on the packed
    # kernel, inside the batch on the gemm crate: equal to f32 rounding
    # (measured 7.2e-7), bit for bit only with COLWGPU_F32_GEMM=packed. On AMX
    # CPUs both run the exact bf16 split, whose rows do not depend on the batch.
    one = model.encode(docs[0])
    assert isinstance(one, np.ndarray) and one.shape == got[0].shape
    assert np.abs(one - got[0]).max() <= 2e-6


def test_precision_is_a_model_option(fixture, model):
    meta, _ = fixture
    with pytest.raises(colwgpu.ColwgpuError, match="unknown precision 'f8'"):
        colwgpu.ColBERT(MODEL, device="cpu", precision="f8")
    with pytest.raises(colwgpu.ColwgpuError, match="bf16"):
        colwgpu.ColBERT(MODEL, device="cpu", precision="f16")
    try:
        bf = colwgpu.ColBERT(MODEL, device="cpu", precision="bf16")
    except colwgpu.ColwgpuError as e:
        # A CPU without AVX512-BF16 or AMX-BF16 refuses the mode, saying so.
        assert "AVX512-BF16" in str(e)
        return
    queries = meta["queries"]
    for a, b in zip(model.encode(queries, is_query=True), bf.encode(queries, is_query=True)):
        assert a.shape == b.shape
        # bf16 linears: close to f32 (cosine >= 0.999, as the Rust tests
        # ask), yet not identical (the mode really ran).
        assert (a * b).sum(axis=1).min() >= 0.999
        assert np.abs(a - b).max() > 0


def exhaustive_top(index, query_vecs, doc_vecs, ids, k):
    """Exact MaxSim over uncompressed vectors, in numpy."""
    scores = [(ids[i], float((query_vecs @ d.T).max(axis=1).sum())) for i, d in enumerate(doc_vecs)]
    scores.sort(key=lambda s: (-s[1], ids.index(s[0])))
    return scores[:k]


def test_build_and_search_texts(built, model, corpus):
    ids, texts = corpus
    assert len(built) == len(ids) and built.ids == ids and built.dim == 128
    hits = built.search(texts[7][:200], k=5)
    assert len(hits) == 5 and hits[0][0] == ids[7]
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))
    # A batch gives one list per query, equal to the single searches.
    batch = built.search([texts[7][:200], texts[42][:200]], k=5)
    assert batch[0] == hits and batch[1][0][0] == ids[42]


def test_search_vectors_and_exhaustive_agree_with_numpy(built, model, corpus):
    ids, texts = corpus
    q = model.encode("effects of statins on cholesterol", is_query=True)
    exact = built.search(q, k=10, exhaustive=True)
    # Exhaustive search scores decompressed vectors: rerank gives the same scores.
    rer = built.rerank(q, [h[0] for h in exact])
    assert [h[0] for h in rer] == [h[0] for h in exact]
    np.testing.assert_allclose([h[1] for h in rer], [h[1] for h in exact], rtol=1e-5)
    # And the compressed scores stay near the uncompressed MaxSim (2-bit residuals).
    doc_vecs = model.encode(texts)
    truth = exhaustive_top(built, q, doc_vecs, ids, 10)
    assert len(set(h[0] for h in exact[:5]) & set(t[0] for t in truth[:10])) >= 4
    # The text query path equals the vector path.
    assert built.search("effects of statins on cholesterol", k=10) == built.search(q, k=10)


def test_build_from_vectors_matches_build_from_texts(tmp_path, built, model, corpus):
    ids, texts = corpus
    vecs = model.encode(texts)
    # float64 and non-contiguous input is converted; the result is the same index.
    vecs64 = [np.asfortranarray(v.astype(np.float64)) for v in vecs]
    idx = colwgpu.Index.build(tmp_path / "v.index", model, vecs64, ids)
    q = model.encode("effects of statins on cholesterol", is_query=True)
    assert idx.search(q, k=10) == built.search(q, k=10)
    # Without a model: vectors only; text search then names the problem.
    anon = colwgpu.Index.build(tmp_path / "anon.index", None, vecs, ids)
    assert anon.search(q, k=3) == built.search(q, k=3)
    with pytest.raises(colwgpu.ColwgpuError, match="does not record its model"):
        anon.search("statins", k=3)


def test_open_uses_the_recorded_model(built):
    again = colwgpu.Index.open(built.path, device="cpu")
    assert again.search("effects of statins on cholesterol", k=5) == built.search(
        "effects of statins on cholesterol", k=5
    )
    assert again.model.dim == 128


def test_errors_carry_the_engines_messages(tmp_path, model, built):
    with pytest.raises(colwgpu.ColwgpuError, match="model directory not found"):
        colwgpu.ColBERT(tmp_path / "no-such-model")
    with pytest.raises(colwgpu.ColwgpuError, match="unknown device 'tpu'"):
        colwgpu.ColBERT(MODEL, device="tpu")
    with pytest.raises(colwgpu.ColwgpuError):
        colwgpu.Index.open(tmp_path / "missing.index")
    with pytest.raises(colwgpu.ColwgpuError, match="k must be at least 1"):
        built.search("statins", k=0)
    with pytest.raises(colwgpu.ColwgpuError, match="2-D"):
        built.search(np.zeros(128, dtype=np.float32), k=3)
    with pytest.raises(colwgpu.ColwgpuError, match="128"):
        built.search(np.ones((4, 64), dtype=np.float32), k=3)
    with pytest.raises(colwgpu.ColwgpuError, match="2 ids for 3 documents"):
        colwgpu.Index.build(tmp_path / "x.index", model, ["a", "b", "c"], ["1", "2"])
    with pytest.raises(colwgpu.ColwgpuError, match="not a str"):
        model.encode(["fine", 3])
    with pytest.raises(colwgpu.ColwgpuError, match="does not encode images"):
        model.encode_images([str(tmp_path / "page.png")])
    with pytest.raises(colwgpu.ColwgpuError, match="not in index"):
        built.rerank("statins", ["no-such-id"])
    # Nothing was left behind by the failed build.
    assert not (tmp_path / "x.index").exists()


def test_two_threads_search_one_index(built):
    queries = ["statins and cholesterol", "vitamin B12 deficiency", "malaria vaccine", "BRCA1"]
    expected = {q: built.search(q, k=10) for q in queries}
    results, errors = [], []

    def worker(qs):
        try:
            for _ in range(3):
                for q in qs:
                    results.append((q, built.search(q, k=10)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(queries[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 12
    for q, hits in results:
        assert hits == expected[q]


def test_wheel_ships_type_stubs():
    pkg = Path(colwgpu.__file__).parent
    assert (pkg / "py.typed").exists()
    assert (pkg / "__init__.pyi").exists()


def test_add_update_delete_and_filter(tmp_path, model, corpus):
    ids, texts = corpus
    meta = [{"year": 2000 + i % 20, "kind": "even" if i % 2 == 0 else "odd"} for i in range(len(ids))]
    half = len(ids) // 2
    index = colwgpu.Index.build(tmp_path / "live.index", model, texts[:half], ids[:half],
                                metadata=meta[:half])
    assert index.metadata([ids[0], ids[1]]) == meta[:2]
    # Add the other half as texts (with metadata), one commit; the object sees it.
    index.add(texts[half:], ids[half:], metadata=meta[half:])
    assert len(index) == len(ids)
    query = texts[half + 3][:200]
    assert index.search(query, k=3)[0][0] == ids[half + 3]
    # Vectors in, too; a duplicate id is refused unless it is an update.
    v = model.encode("a brand new document about malaria vaccines")
    index.add([v], ["new-1"])
    with pytest.raises(colwgpu.ColwgpuError, match="new-1"):
        index.add([v], ["new-1"])
    index.update([texts[0]], ["new-1"])
    # Filtered search: only documents whose metadata passes, scored exactly.
    want = [
        i for i, m in zip(ids, meta) if m["kind"] == "odd" and m["year"] >= 2010
    ]
    hits = index.search(query, k=len(ids), filter=("kind = ? AND year >= ?", ["odd", 2010]),
                        exhaustive=True)
    assert sorted(h[0] for h in hits) == sorted(want)
    full = {h[0]: h[1] for h in index.search(query, k=len(ids) + 1, exhaustive=True)}
    for doc, score in hits:
        assert score == pytest.approx(full[doc], abs=1e-6)
    # Parameters are bound, never spliced: a hostile string is just a value.
    assert index.search(query, k=5, filter=("kind = ?", ["odd'; DROP TABLE metadata; --"])) == []
    with pytest.raises(colwgpu.ColwgpuError):
        index.search(query, k=5, filter="1; DROP TABLE metadata")
    # Delete: gone from search at once; unknown ids are refused.
    index.delete([ids[half + 3]])
    assert ids[half + 3] not in [h[0] for h in index.search(query, k=10)]
    with pytest.raises(colwgpu.ColwgpuError):
        index.delete(["no-such-id"])
    # A second handle opened now sees everything.
    again = colwgpu.Index.open(tmp_path / "live.index", device="cpu")
    assert len(again) == len(index) == len(ids)  # + new-1 - one deleted
