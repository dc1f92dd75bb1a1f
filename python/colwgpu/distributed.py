"""Scale-out on Ray: a corpus indexed as shards by many workers, searched by one
actor per shard.

    import ray, colwgpu
    from colwgpu.distributed import build_sharded, ShardedIndex

    ray.init()                                   # or ray.init(address="auto") on a cluster
    build_sharded("scifact.shards", "models/colbert-minilm", texts, ids, num_shards=4)
    index = ShardedIndex("scifact.shards")      # one actor per shard
    hits = index.search("what do statins do?", k=10)

How it stays exact: the centroids and the residual codec are trained once, on a
seeded sample of the corpus (``<path>/codec``), and every shard is compressed
with them (``codec_from``). A document's compressed vectors, and so its scores,
are then the same whichever shard holds it; each shard returns its own top-k and
the merge of those is the corpus's top-k (exactly so for exhaustive search; for
PLAID, each shard keeps at least the candidates a single index would keep among
its documents).

The shard directories must be reachable by the workers under the same path (a
shared file system on a multi-node cluster, or one machine).
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import ColwgpuError, Index, Model, _as_vectors, _is_vectors, _texts

MANIFEST = "shards.json"

Hit = Tuple[str, float]


def _ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ColwgpuError(
            "colwgpu.distributed needs Ray: pip install 'colwgpu[ray]' (or pip install ray)"
        ) from e
    return ray


def _build_shard(shard_dir, model_path, documents, ids, codec_dir, nbits, device):
    """One shard: encode its documents (or take their vectors) and compress
    them with the shared codec. Runs in a Ray worker."""
    start = time.perf_counter()
    model = None if model_path is None else Model(model_path, device=device)
    Index.build(shard_dir, model, documents, ids, nbits=nbits, device=device, codec_from=codec_dir)
    return {"path": shard_dir, "num_docs": len(ids), "seconds": time.perf_counter() - start}


def build_sharded(
    path: Union[str, os.PathLike],
    model: Optional[Union[str, os.PathLike]],
    documents: Sequence[Any],
    ids: Optional[Sequence[str]] = None,
    num_shards: int = 2,
    sample_docs: Optional[int] = None,
    nbits: int = 2,
    seed: int = 12345,
    device: str = "auto",
    num_cpus_per_task: float = 1,
    num_gpus_per_task: float = 0,
) -> Dict[str, Any]:
    """Builds ``num_shards`` shard indexes of ``documents`` under ``path`` with Ray
    tasks (``ray.init()`` first). ``model`` is a checkpoint directory every worker
    can read (``None`` when ``documents`` are precomputed ``(tokens, dim)`` arrays).
    Documents go round-robin to shards (document ``i`` to shard ``i % num_shards``).

    The codec is trained once on ``sample_docs`` documents drawn with ``seed``
    (default: all documents up to 2,000, else 10%, at least 2,000). Returns the
    manifest written to ``<path>/shards.json``: shard paths, document counts and
    build seconds (codec and each shard).
    """
    ray = _ray()
    docs = list(documents)
    if not docs:
        raise ColwgpuError("invalid input: no documents to index")
    if num_shards < 1:
        raise ColwgpuError(f"invalid input: num_shards must be at least 1, got {num_shards}")
    id_list = [str(i) for i in range(len(docs))] if ids is None else _texts(ids, "id")
    if len(id_list) != len(docs):
        raise ColwgpuError(f"invalid input: {len(id_list)} ids for {len(docs)} documents")
    if len(set(id_list)) != len(id_list):
        raise ColwgpuError("invalid input: document ids are not unique")
    root = os.path.abspath(os.fspath(path))
    os.makedirs(root, exist_ok=True)
    model_path = None if model is None else os.path.abspath(os.fspath(model))
    if _is_vectors(docs[0]):
        docs = [_as_vectors(d, f"document {i}") for i, d in enumerate(docs)]
    remote = ray.remote(num_cpus=num_cpus_per_task, num_gpus=num_gpus_per_task)(_build_shard)
    start = time.perf_counter()

    # 1. The codec, from a seeded sample of the whole corpus.
    n = len(docs)
    if sample_docs is None:
        sample_docs = n if n <= 2000 else max(2000, n // 10)
    picked = sorted(random.Random(seed).sample(range(n), min(sample_docs, n)))
    codec_dir = os.path.join(root, "codec")
    codec_info = ray.get(
        remote.remote(
            codec_dir,
            model_path,
            [docs[i] for i in picked],
            [id_list[i] for i in picked],
            None,
            nbits,
            device,
        )
    )

    # 2. The shards, in parallel, each compressed with that codec.
    tasks = []
    for s in range(num_shards):
        part = list(range(s, n, num_shards))
        tasks.append(
            remote.remote(
                os.path.join(root, f"shard-{s:03d}"),
                model_path,
                ray.put([docs[i] for i in part]),
                [id_list[i] for i in part],
                codec_dir,
                nbits,
                device,
            )
        )
    shards = ray.get(tasks)
    manifest = {
        "format": 1,
        "model": model_path,
        "codec": "codec",
        "num_docs": n,
        "codec_seconds": codec_info["seconds"],
        "codec_sample_docs": len(picked),
        "seconds": time.perf_counter() - start,
        "shards": [
            {"path": os.path.basename(s["path"]), "num_docs": s["num_docs"], "seconds": s["seconds"]}
            for s in shards
        ],
    }
    tmp = os.path.join(root, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(root, MANIFEST))
    return manifest


class _ShardActor:
    """One shard, opened once, searched many times (a Ray actor)."""

    def __init__(self, path: str, device: str):
        self.index = Index.open(path, device=device)

    def search(self, queries, k, knobs):
        return self.index.search(queries, k, **knobs)

    def num_docs(self) -> int:
        return self.index.num_docs


def merge_top_k(per_shard: List[List[Hit]], k: int) -> List[Hit]:
    """The best ``k`` of several shards' ``(id, score)`` lists: score descending,
    ties to the earlier shard (then its own order)."""
    ranked = [
        (-score, s, r, doc) for s, hits in enumerate(per_shard) for r, (doc, score) in enumerate(hits)
    ]
    ranked.sort()
    return [(doc, -neg) for neg, _, _, doc in ranked[:k]]


class ShardedIndex:
    """The shards under ``path`` (written by :func:`build_sharded`), one Ray actor
    each (``num_cpus_per_shard`` defaults to one CPU, or an equal share of the
    cluster's when it has fewer CPUs than shards). Queries are encoded once, here, by the index's model (or ``model``),
    and their vectors fan out to every shard; each returns its top-k and the
    merge is the corpus's top-k."""

    def __init__(
        self,
        path: Union[str, os.PathLike],
        model: Optional[Model] = None,
        device: str = "auto",
        num_cpus_per_shard: Optional[float] = None,
        num_gpus_per_shard: float = 0,
    ) -> None:
        ray = _ray()
        self.path = os.path.abspath(os.fspath(path))
        manifest_path = os.path.join(self.path, MANIFEST)
        try:
            with open(manifest_path) as f:
                self.manifest = json.load(f)
        except FileNotFoundError:
            raise ColwgpuError(
                f"{manifest_path}: no shard manifest (build the shards with build_sharded)"
            ) from None
        except (OSError, ValueError) as e:
            raise ColwgpuError(f"{manifest_path}: unreadable shard manifest: {e}") from None
        self._model = model
        self._device = device
        shards = self.manifest["shards"]
        if num_cpus_per_shard is None:
            # Every actor must fit at once (an actor holds its CPUs while it
            # lives): one CPU each where the cluster has enough, else a share.
            cpus = ray.cluster_resources().get("CPU", 1.0)
            num_cpus_per_shard = min(1.0, cpus / len(shards))
        actor = ray.remote(num_cpus=num_cpus_per_shard, num_gpus=num_gpus_per_shard)(_ShardActor)
        self.actors = [
            actor.remote(os.path.join(self.path, s["path"]), device) for s in shards
        ]
        counts = ray.get([a.num_docs.remote() for a in self.actors])
        self.num_docs = sum(counts)
        if self.num_docs != self.manifest["num_docs"]:
            raise ColwgpuError(
                f"{self.path}: the shards hold {self.num_docs} documents, the manifest says "
                f"{self.manifest['num_docs']}"
            )

    @property
    def model(self) -> Model:
        if self._model is None:
            if not self.manifest.get("model"):
                raise ColwgpuError(
                    "the shards were built from vectors of an unknown model: pass model= "
                    "or search with query vectors"
                )
            self._model = Model(self.manifest["model"], device=self._device)
        return self._model

    def search(
        self, queries: Any, k: int = 10, **knobs: Any
    ) -> Union[List[Hit], List[List[Hit]]]:
        """Like :meth:`colwgpu.Index.search`: one text or array → one list of
        ``(id, score)``; a list → one list per query."""
        ray = _ray()
        single = isinstance(queries, (str, np.ndarray))
        items = [queries] if single else list(queries)
        if not items:
            return []
        if isinstance(items[0], str):
            vecs = self.model.encode(_texts(items, "query"), is_query=True)
        else:
            vecs = [_as_vectors(q, f"query {i}") for i, q in enumerate(items)]
        ref = ray.put(vecs)
        per_shard = ray.get([a.search.remote(ref, k, knobs) for a in self.actors])
        merged = [merge_top_k([shard[q] for shard in per_shard], k) for q in range(len(vecs))]
        return merged[0] if single else merged

    def close(self) -> None:
        """Stops the shard actors."""
        ray = _ray()
        for a in self.actors:
            ray.kill(a)
        self.actors = []
