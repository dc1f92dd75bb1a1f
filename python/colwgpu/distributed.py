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
are then the same whichever shard holds it. PLAID's per-document work runs on
the shards, and each of its three cuts (the best ``ndocs`` after the pruned
centroid interaction, the best ``ndocs / 4`` after the full one, the best ``k``
after exact MaxSim) is taken once, here, over every shard's scores: three rounds
of calls per query batch, and the result is one index's PLAID top-k over the
same documents, ids and scores. (Each shard cutting on its own would rerank up
to S× more documents.) Exhaustive search merges each shard's exact top-k.

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

from . import ColwgpuError, Index, Model, _as_vectors, _filter, _is_vectors, _texts
from ._colwgpu import merge_kept, merge_ranked, plaid_params

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


def _build_shard(shard_dir, model_path, documents, ids, codec_dir, nbits, device, metadata=None):
    """One shard: encode its documents (or take their vectors) and compress
    them with the shared codec. Runs in a Ray worker."""
    start = time.perf_counter()
    model = None if model_path is None else Model(model_path, device=device)
    Index.build(shard_dir, model, documents, ids, metadata=metadata, nbits=nbits, device=device,
                codec_from=codec_dir)
    return {"path": shard_dir, "num_docs": len(ids), "seconds": time.perf_counter() - start}


def build_sharded(
    path: Union[str, os.PathLike],
    model: Optional[Union[str, os.PathLike]],
    documents: Sequence[Any],
    ids: Optional[Sequence[str]] = None,
    num_shards: int = 2,
    metadata: Optional[Sequence[Optional[dict]]] = None,
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
    Documents go round-robin to shards (document ``i`` to shard ``i % num_shards``),
    each with its ``metadata`` entry (a dict or ``None``) when given.

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
    meta = None if metadata is None else list(metadata)
    if meta is not None and len(meta) != len(docs):
        raise ColwgpuError(f"invalid input: {len(meta)} metadata entries for {len(docs)} documents")
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
                None if meta is None else [meta[i] for i in part],
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
    """One shard, opened once, searched many times (a Ray actor). Its methods
    are the shard's side of the rounds in :meth:`ShardedIndex.search`."""

    def __init__(self, path: str, device: str):
        self.path = path
        self.device = device
        self.index = Index.open(path, device=device)

    def candidates(self, queries, k, knobs, filter=None, all_allowed=False):
        if filter is None:
            return [(d, x, 0) for d, x in self.index._core.shard_candidates(queries, k, *knobs)]
        return self.index._core.shard_candidates_filtered(queries, k, *knobs, *filter, all_allowed)

    def full_scores(self, queries, docs):
        return self.index._core.shard_full_scores(queries, docs)

    def exact_scores(self, queries, docs):
        return self.index._core.shard_exact_scores(queries, docs)

    def exhaustive(self, queries, k, filter=None):
        return self.index._core.shard_exhaustive(queries, k, *(filter or (None, "[]")))

    def holding(self, ids):
        """Which of ``ids`` this shard holds."""
        have = set(self.index.ids)
        return [i in have for i in ids]

    def add(self, vectors, ids, metadata, update):
        return self.index.add(vectors, ids, metadata=metadata, update=update)

    def delete(self, ids):
        return self.index.delete(ids)

    def metadata(self, ids):
        return self.index.metadata(ids)

    def num_docs(self) -> int:
        return self.index.num_docs


def merge_top_k(per_shard: List[List[Tuple[int, str, float]]], k: int) -> List[Hit]:
    """The best ``k`` of several shards' ``(document index, id, score)`` lists:
    score descending, ties to the lower document index, then the lower shard
    (one index's order when documents were dealt round-robin)."""
    arrays = [
        (
            np.array([d for d, _, _ in h], dtype=np.uint32),
            np.array([x for _, _, x in h], dtype=np.float32),
        )
        for h in per_shard
    ]
    ids = [{d: i for d, i, _ in h} for h in per_shard]
    return [(ids[s][d], score) for s, d, score in merge_ranked(arrays, k)]


class ShardedIndex:
    """The shards under ``path`` (written by :func:`build_sharded`), one Ray actor
    each (``num_cpus_per_shard`` defaults to one CPU, or an equal share of the
    cluster's when it has fewer CPUs than shards). Queries are encoded once,
    here, by the index's model (or ``model``), and their vectors fan out to
    every shard; see the module's text for how the merge stays exact.

    ``add``, ``update`` and ``delete`` change the shards: new documents are dealt
    round-robin on from the last one dealt, updates and deletes go to the shard
    holding the id. Each shard's change is one atomic commit; a change that
    spans shards is not atomic across them (an error names the shard that
    failed, and the shards before it keep their commit)."""

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
        self.num_docs = sum(ray.get([a.num_docs.remote() for a in self.actors]))

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

    def _vectors(self, items: List[Any], what: str) -> List[np.ndarray]:
        if isinstance(items[0], str):
            encode = self.model.encode(_texts(items, what), is_query=(what == "query"))
            return list(encode)
        return [_as_vectors(q, f"{what} {i}") for i, q in enumerate(items)]

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        ncells: Optional[int] = None,
        centroid_score_threshold: Optional[float] = None,
        ndocs: Optional[int] = None,
        exhaustive: bool = False,
        filter: Optional[Union[str, Tuple[str, Sequence[Any]]]] = None,
    ) -> Union[List[Hit], List[List[Hit]]]:
        """Like :meth:`colwgpu.Index.search`: one text or array → one list of
        ``(id, score)``; a list → one list per query. The result equals one
        index's search over the same documents, with or without a ``filter``
        (each shard evaluates it on its own metadata)."""
        ray = _ray()
        single = isinstance(queries, (str, np.ndarray))
        items = [queries] if single else list(queries)
        if not items:
            return []
        vecs = self._vectors(items, "query")
        ref = ray.put(vecs)
        n = len(self.actors)
        cond = None if filter is None else _filter(filter)
        if exhaustive:
            per_shard = ray.get([a.exhaustive.remote(ref, k, cond) for a in self.actors])
            merged = [merge_top_k([per_shard[s][q] for s in range(n)], k) for q in range(len(vecs))]
        else:
            knobs = plaid_params(k, ncells, centroid_score_threshold, ndocs)
            cut = knobs[2]
            # Round 1: each shard's best ndocs after the pruned interaction.
            first = ray.get([a.candidates.remote(ref, k, knobs, cond) for a in self.actors])
            if cond is not None:
                # Fewer allowed candidates than ndocs over all shards: every
                # allowed document enters the pool (one index's rule).
                few = [q for q in range(len(vecs)) if sum(first[s][q][2] for s in range(n)) < cut]
                if few:
                    qs = [vecs[q] for q in few]
                    again = ray.get([a.candidates.remote(qs, k, knobs, cond, True) for a in self.actors])
                    for s in range(n):
                        for j, q in enumerate(few):
                            first[s][q] = again[s][j]
            kept = [
                merge_kept([first[s][q][:2] for s in range(n)], cut) for q in range(len(vecs))
            ]
            # Round 2: the full interaction of the corpus's best ndocs.
            full = ray.get(
                [a.full_scores.remote(ref, [kept[q][s] for q in range(len(vecs))])
                 for s, a in enumerate(self.actors)]
            )
            reranked = [
                merge_kept([(kept[q][s], full[s][q]) for s in range(n)], max(cut // 4, 1))
                for q in range(len(vecs))
            ]
            # Round 3: exact MaxSim of the best ndocs / 4; the top k overall.
            exact = ray.get(
                [a.exact_scores.remote(ref, [reranked[q][s] for q in range(len(vecs))])
                 for s, a in enumerate(self.actors)]
            )
            merged = [merge_top_k([exact[s][q] for s in range(n)], k) for q in range(len(vecs))]
        return merged[0] if single else merged

    def _holders(self, ids: List[str]) -> List[Optional[int]]:
        """The shard holding each id (``None`` where none does)."""
        ray = _ray()
        held = ray.get([a.holding.remote(ids) for a in self.actors])
        out: List[Optional[int]] = []
        for j in range(len(ids)):
            out.append(next((s for s in range(len(self.actors)) if held[s][j]), None))
        return out

    def _save_manifest(self) -> None:
        tmp = os.path.join(self.path, MANIFEST + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.path, MANIFEST))

    def add(
        self,
        documents: Sequence[Any],
        ids: Sequence[str],
        metadata: Optional[Sequence[Optional[dict]]] = None,
        update: bool = False,
    ) -> int:
        """Adds documents (texts, encoded here once, or ``(tokens, dim)``
        arrays) under new ``ids``, dealt round-robin on from the last document
        dealt; with ``update=True`` an existing id is replaced on the shard that
        holds it. Returns the number of documents the shards now hold."""
        ray = _ray()
        docs = list(documents)
        id_list = _texts(ids, "id")
        if len(id_list) != len(docs):
            raise ColwgpuError(f"invalid input: {len(id_list)} ids for {len(docs)} documents")
        if len(set(id_list)) != len(id_list):
            raise ColwgpuError("invalid input: document ids are not unique")
        meta = None if metadata is None else list(metadata)
        if meta is not None and len(meta) != len(docs):
            raise ColwgpuError(f"invalid input: {len(meta)} metadata entries for {len(docs)} documents")
        if not docs:
            return self.num_docs
        holders = self._holders(id_list)
        if not update:
            taken = [i for i, h in zip(id_list, holders) if h is not None]
            if taken:
                raise ColwgpuError(
                    f"invalid input: document id '{taken[0]}' is already in the index "
                    "(use update=True to replace it)"
                )
        vecs = self._vectors(docs, "document")
        dealt = self.manifest.get("dealt", self.manifest["num_docs"])
        plan: Dict[Tuple[int, bool], List[int]] = {}
        for j, h in enumerate(holders):
            replace = h is not None
            if h is None:
                h = dealt % len(self.actors)
                dealt += 1
            plan.setdefault((h, replace), []).append(j)
        calls = {
            key: self.actors[key[0]].add.remote(
                [vecs[j] for j in js],
                [id_list[j] for j in js],
                None if meta is None else [meta[j] for j in js],
                key[1],
            )
            for key, js in sorted(plan.items())
        }
        self._finish(calls, dealt)
        return self.num_docs

    def update(
        self,
        documents: Sequence[Any],
        ids: Sequence[str],
        metadata: Optional[Sequence[Optional[dict]]] = None,
    ) -> int:
        """Replaces documents (an id not yet in the index is added)."""
        return self.add(documents, ids, metadata, update=True)

    def delete(self, ids: Sequence[str]) -> int:
        """Deletes documents by id from the shards holding them (every id must
        exist). Returns the number of documents the shards now hold."""
        id_list = _texts(ids, "id")
        holders = self._holders(id_list)
        missing = [i for i, h in zip(id_list, holders) if h is None]
        if missing:
            raise ColwgpuError(f"invalid input: document id '{missing[0]}' is not in the index")
        plan: Dict[int, List[str]] = {}
        for i, h in zip(id_list, holders):
            plan.setdefault(h, []).append(i)
        calls = {(s, False): self.actors[s].delete.remote(js) for s, js in sorted(plan.items())}
        self._finish(calls, self.manifest.get("dealt", self.manifest["num_docs"]))
        return self.num_docs

    def _finish(self, calls: Dict[Tuple[int, bool], Any], dealt: int) -> None:
        """Waits for every shard's commit, then records the new counts; the
        first failure is raised naming its shard."""
        ray = _ray()
        failed = None
        for (s, _), ref in calls.items():
            try:
                ray.get(ref)
            except Exception as e:  # a shard's error, re-raised below with its name
                failed = failed or (s, e)
        self.num_docs = sum(ray.get([a.num_docs.remote() for a in self.actors]))
        self.manifest["dealt"] = dealt
        self.manifest["num_docs"] = self.num_docs
        self._save_manifest()
        if failed is not None:
            s, e = failed
            cause = getattr(e, "cause", None) or e
            raise ColwgpuError(f"shard {self.manifest['shards'][s]['path']}: {cause}") from e

    def metadata(self, ids: Sequence[str]) -> List[Optional[dict]]:
        """The metadata of documents ``ids`` from the shards holding them."""
        ray = _ray()
        id_list = _texts(ids, "id")
        holders = self._holders(id_list)
        missing = [i for i, h in zip(id_list, holders) if h is None]
        if missing:
            raise ColwgpuError(f"invalid input: document id '{missing[0]}' is not in the index")
        return [ray.get(self.actors[h].metadata.remote([i]))[0] for i, h in zip(id_list, holders)]

    def close(self) -> None:
        """Stops the shard actors."""
        ray = _ray()
        for a in self.actors:
            ray.kill(a)
        self.actors = []
