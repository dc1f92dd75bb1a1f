"""Scale-out on Ray (a local cluster of 2 CPUs): shards built by Ray tasks with
one shared codec, searched by one actor per shard, merge into exactly the
top-k of one index over the same documents."""

import json
from pathlib import Path

import numpy as np
import pytest

import colwgpu
from colwgpu.distributed import ShardedIndex, build_sharded, merge_top_k

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "colbert-minilm"
SCIFACT = ROOT / "tests" / "data" / "scifact-1k"

pytestmark = pytest.mark.skipif(
    not (MODEL / "config.json").exists(),
    reason="the model is fetched by scripts/test.sh (models/fetch-model.sh)",
)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus():
    lines = (SCIFACT / "corpus.jsonl").read_text().splitlines()[:166]
    docs = [json.loads(l) for l in lines]
    ids = [d["_id"] for d in docs]
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
    queries = [json.loads(l)["text"] for l in (SCIFACT / "queries.jsonl").read_text().splitlines()[:12]]
    return ids, texts, queries


def test_merge_top_k_by_hand():
    a = [(0, "x", 3.0), (5, "y", 1.0)]
    b = [(1, "z", 2.0), (2, "w", 1.0)]
    # Ties (1.0) go to the lower document index, then to the lower shard.
    assert merge_top_k([a, b], 3) == [("x", 3.0), ("z", 2.0), ("w", 1.0)]
    assert merge_top_k([[], b], 5) == [("z", 2.0), ("w", 1.0)]
    c = [(2, "v", 1.0)]
    assert merge_top_k([c, b], 2) == [("z", 2.0), ("v", 1.0)]


def test_four_shards_equal_one_index(tmp_path, cluster, corpus):
    ids, texts, queries = corpus
    base_meta = [{"n": i} for i in range(160)]
    manifest = build_sharded(
        tmp_path / "shards", MODEL, texts[:160], ids[:160], num_shards=4, metadata=base_meta, device="cpu"
    )
    assert [s["num_docs"] for s in manifest["shards"]] == [40, 40, 40, 40]
    model = colwgpu.ColBERT(MODEL, device="cpu")
    whole = colwgpu.Index.build(
        tmp_path / "whole", model, texts[:160], ids[:160], metadata=base_meta,
        codec_from=tmp_path / "shards" / "codec",
    )
    sharded = ShardedIndex(tmp_path / "shards", model=model, device="cpu")
    assert sharded.num_docs == 160
    for exhaustive in (True, False):
        got = sharded.search(queries, k=10, exhaustive=exhaustive)
        want = whole.search(queries, k=10, exhaustive=exhaustive)
        assert got == want, f"exhaustive={exhaustive}"
    # PLAID with cuts that bite (ndocs 16 of 160): still one index's top-k.
    tight = dict(k=4, ncells=2, centroid_score_threshold=0.4, ndocs=16)
    assert sharded.search(queries, **tight) == whole.search(queries, **tight)
    # Filters: a third of the corpus, 10 documents (fewer allowed candidates
    # than ndocs: every allowed one enters the pool) and 2 (fewer than k).
    for f in [("n % 3 = ?", [0]), ("n < ?", [10]), ("n < ?", [2])]:
        for exhaustive in (False, True):
            got = sharded.search(queries, filter=f, exhaustive=exhaustive, **tight)
            assert got == whole.search(queries, filter=f, exhaustive=exhaustive, **tight), (f, exhaustive)
            assert all(len(h) == min(4, f[1][0]) for h in got) or f[0].startswith("n %")
    # One query in, one list out; vectors work as well as texts.
    q = model.encode(queries[0], is_query=True)
    assert sharded.search(q, k=5) == whole.search(q, k=5) == sharded.search(queries[0], k=5)

    # Changes: new documents dealt round-robin on, an update, deletes; the
    # shards then still answer as one index given the same changes.
    new_ids, new_texts = ids[160:166], texts[160:166]
    meta = [{"n": 160 + i} for i in range(6)]
    assert sharded.add(new_texts, new_ids, metadata=meta) == 166
    whole.add(new_texts, new_ids, metadata=meta)
    with pytest.raises(colwgpu.ColwgpuError, match="already in the index"):
        sharded.add(new_texts[:1], new_ids[:1])
    sharded.update([texts[0]], [ids[5]])
    whole.update([texts[0]], [ids[5]])
    assert sharded.delete([ids[1], new_ids[0]]) == 164
    whole.delete([ids[1], new_ids[0]])
    with pytest.raises(colwgpu.ColwgpuError, match="not in the index"):
        sharded.delete([ids[1]])
    assert sharded.metadata([new_ids[3]]) == [{"n": 163}]
    got = sharded.search(queries, k=10, exhaustive=True)
    assert got == whole.search(queries, k=10, exhaustive=True)
    assert ids[1] not in {i for hits in got for i, _ in hits}
    sharded.close()
    # The manifest records the documents dealt, so a reopened index deals on.
    reopened = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert reopened["dealt"] == 166 and reopened["num_docs"] == 164


def test_sharded_errors(tmp_path, cluster):
    with pytest.raises(colwgpu.ColwgpuError, match="no shard manifest"):
        ShardedIndex(tmp_path / "nothing")
    with pytest.raises(colwgpu.ColwgpuError, match="num_shards"):
        build_sharded(tmp_path / "s", MODEL, ["a"], ["1"], num_shards=0)
    with pytest.raises(colwgpu.ColwgpuError, match="not unique"):
        build_sharded(tmp_path / "s", MODEL, ["a", "b"], ["1", "1"])
