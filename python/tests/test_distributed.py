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
    lines = (SCIFACT / "corpus.jsonl").read_text().splitlines()[:160]
    docs = [json.loads(l) for l in lines]
    ids = [d["_id"] for d in docs]
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
    queries = [json.loads(l)["text"] for l in (SCIFACT / "queries.jsonl").read_text().splitlines()[:12]]
    return ids, texts, queries


def test_merge_top_k_by_hand():
    a = [("x", 3.0), ("y", 1.0)]
    b = [("z", 2.0), ("w", 1.0)]
    assert merge_top_k([a, b], 3) == [("x", 3.0), ("z", 2.0), ("y", 1.0)]
    assert merge_top_k([[], b], 5) == b


def test_four_shards_equal_one_index(tmp_path, cluster, corpus):
    ids, texts, queries = corpus
    manifest = build_sharded(tmp_path / "shards", MODEL, texts, ids, num_shards=4, device="cpu")
    assert [s["num_docs"] for s in manifest["shards"]] == [40, 40, 40, 40]
    model = colwgpu.ColBERT(MODEL, device="cpu")
    whole = colwgpu.Index.build(
        tmp_path / "whole", model, texts, ids, codec_from=tmp_path / "shards" / "codec"
    )
    sharded = ShardedIndex(tmp_path / "shards", model=model, device="cpu")
    assert sharded.num_docs == len(ids)
    for exhaustive in (True, False):
        got = sharded.search(queries, k=10, exhaustive=exhaustive)
        want = whole.search(queries, k=10, exhaustive=exhaustive)
        assert got == want, f"exhaustive={exhaustive}"
    # One query in, one list out; vectors work as well as texts.
    q = model.encode(queries[0], is_query=True)
    assert sharded.search(q, k=5) == whole.search(q, k=5) == sharded.search(queries[0], k=5)
    sharded.close()


def test_sharded_errors(tmp_path, cluster):
    with pytest.raises(colwgpu.ColwgpuError, match="no shard manifest"):
        ShardedIndex(tmp_path / "nothing")
    with pytest.raises(colwgpu.ColwgpuError, match="num_shards"):
        build_sharded(tmp_path / "s", MODEL, ["a"], ["1"], num_shards=0)
    with pytest.raises(colwgpu.ColwgpuError, match="not unique"):
        build_sharded(tmp_path / "s", MODEL, ["a", "b"], ["1", "1"])
