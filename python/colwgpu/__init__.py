"""colwgpu: late-interaction retrieval (ColBERT, ColQwen2, ColPali) whose heavy
math runs as WGSL compute shaders on any GPU through wgpu, or natively on the CPU.

    import colwgpu
    model = colwgpu.ColBERT("models/colbert-minilm", device="auto")
    index = colwgpu.Index.build("scifact.index", model, texts, ids)
    hits = index.search("what do statins do?", k=10)   # [(id, score), ...]

Everything that encodes, builds or searches releases the GIL. Token vectors are
numpy ``float32`` arrays of shape ``(tokens, dim)``; precomputed vectors are
accepted wherever a text is.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._colwgpu import ColwgpuError, IndexLockedError, _Index, _Model, __version__

__all__ = [
    "ColBERT",
    "ColPali",
    "ColQwen2",
    "ColwgpuError",
    "Index",
    "IndexLockedError",
    "Model",
    "__version__",
]

Hit = Tuple[str, float]


def _as_vectors(x: Any, what: str) -> np.ndarray:
    """A C-contiguous float32 ``(tokens, dim)`` array (no copy when it already is one)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ColwgpuError(
            f"invalid input: {what} must be a non-empty 2-D array of token vectors "
            f"(tokens, dim), got shape {a.shape}"
        )
    return a


def _is_vectors(x: Any) -> bool:
    return isinstance(x, np.ndarray) or (
        isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], (list, tuple, np.ndarray))
    )


def _texts(items: Sequence[Any], what: str) -> List[str]:
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise ColwgpuError(f"invalid input: {what} {i} is a {type(t).__name__}, not a str")
        out.append(t)
    return out


def _metadata(metadata: Any, n: int) -> Optional[List[str]]:
    """One JSON text per document (``"null"`` for none), or ``None``."""
    if metadata is None:
        return None
    items = list(metadata)
    if len(items) != n:
        raise ColwgpuError(f"invalid input: {len(items)} metadata entries for {n} documents")
    out = []
    for i, m in enumerate(items):
        if m is not None and not isinstance(m, dict):
            raise ColwgpuError(
                f"invalid input: metadata {i} is a {type(m).__name__}, not a dict or None"
            )
        out.append(json.dumps(m))
    return out


def _filter(f: Any) -> Tuple[Optional[str], str]:
    if f is None:
        return (None, "[]")
    if isinstance(f, str):
        return (f, "[]")
    if isinstance(f, (tuple, list)) and len(f) == 2 and isinstance(f[0], str):
        return (f[0], json.dumps(list(f[1])))
    raise ColwgpuError(
        "invalid input: filter must be a condition string or (condition, parameters)"
    )


class Model:
    """A late-interaction model loaded once on one device.

    ``path`` is a Hugging Face style checkpoint directory: a ColBERT text model
    (PyLate / stanford ColBERT layout) or a page-image model (ColQwen2, ColPali,
    or a LoRA adapter on one, with ``base`` naming the base model when the
    adapter's config does not). ``device`` is ``"auto"`` (a hardware GPU if
    there is one, else the native CPU backend), ``"cpu"`` or ``"gpu"`` (wgpu on
    any adapter, software ones included). ``precision`` is ``"f32"`` (the
    default), ``"bf16"`` (cpu backend: bf16 linear layers on AMX-BF16 or
    AVX512-BF16) or ``"f16"`` (gpu backend: f16 linear weights on adapters
    with SHADER_F16); a mode the chosen backend lacks is an error naming the
    one to use.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike],
        device: str = "auto",
        batch_size: int = 32,
        base: Optional[Union[str, os.PathLike]] = None,
        precision: str = "f32",
    ) -> None:
        self._core = _Model(
            os.fspath(path),
            device,
            batch_size,
            None if base is None else os.fspath(base),
            precision,
        )
        self._check_kind()

    @classmethod
    def _wrap(cls, core: _Model) -> "Model":
        m = cls.__new__(cls)
        m._core = core
        return m

    def _check_kind(self) -> None:
        pass

    @property
    def dim(self) -> int:
        """Dimension of the token vectors."""
        return self._core.dim

    @property
    def takes_images(self) -> bool:
        """Whether documents are page images (ColQwen2, ColPali) rather than texts."""
        return self._core.takes_images

    @property
    def path(self) -> str:
        return os.fspath(self._core.path)

    def describe(self) -> str:
        return self._core.describe()

    def encode(
        self, texts: Union[str, Sequence[str]], is_query: bool = False
    ) -> Union[np.ndarray, List[np.ndarray]]:
        """Token vectors of each text: one ``(tokens, dim)`` float32 array per text
        (one array for one ``str``). Queries (``is_query=True``) get the model's
        query prompt and padding; documents its document prompt."""
        single = isinstance(texts, str)
        items = [texts] if single else _texts(texts, "text")
        out = self._core.encode_texts(items, is_query)
        return out[0] if single else out

    def encode_images(
        self, images: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]
    ) -> Union[np.ndarray, List[np.ndarray]]:
        """Token vectors of each page image file (PNG or JPEG): one
        ``(patches, dim)`` array per image (one array for one path)."""
        single = isinstance(images, (str, os.PathLike))
        items = [images] if single else list(images)
        out = self._core.encode_images([os.fspath(p) for p in items])
        return out[0] if single else out

    def __repr__(self) -> str:
        return repr(self._core)


class ColBERT(Model):
    """A ColBERT text model (documents and queries are texts)."""

    def _check_kind(self) -> None:
        if self.takes_images:
            raise ColwgpuError(
                f"invalid input: {self.path} is a page-image model ({self.describe()}), "
                "not a ColBERT text model: open it with colwgpu.Model"
            )


class _PageModel(Model):
    _family = ""

    def _check_kind(self) -> None:
        if not self.takes_images:
            raise ColwgpuError(
                f"invalid input: {self.path} is a text model ({self.describe()}), "
                f"not a {self._family} page-image model: open it with colwgpu.ColBERT"
            )


class ColQwen2(_PageModel):
    """A ColQwen2 page-image model (documents are page images, queries texts)."""

    _family = "ColQwen2"


class ColPali(_PageModel):
    """A ColPali page-image model (documents are page images, queries texts)."""

    _family = "ColPali"


class Index:
    """A compressed late-interaction index on disk (ColBERTv2 residual
    compression, PLAID search, exact MaxSim on the best candidates)."""

    def __init__(self, core: _Index, model: Optional[Model] = None, device: str = "auto") -> None:
        self._core = core
        self._model = model
        self._device = device

    @classmethod
    def build(
        cls,
        path: Union[str, os.PathLike],
        model: Optional[Model],
        documents: Sequence[Any],
        ids: Optional[Sequence[str]] = None,
        metadata: Optional[Sequence[Optional[dict]]] = None,
        nbits: int = 2,
        num_centroids: Optional[int] = None,
        seed: int = 12345,
        device: str = "auto",
        wait: bool = False,
        codec_from: Optional[Union[str, os.PathLike]] = None,
    ) -> "Index":
        """Builds an index at ``path`` (an index already there is replaced only
        once the new one is complete).

        ``documents``: texts (encoded by ``model``), page image paths (with a
        page-image ``model``), or precomputed ``(tokens, dim)`` arrays (then
        ``model`` may be ``None``; if given it is recorded as the index's model).
        ``ids`` default to ``"0"``, ``"1"``, …  ``metadata``: one JSON-able
        ``dict`` (or ``None``) per document, for ``filter=`` in search.  ``codec_from``: train nothing,
        compress with the centroids and codec of the index at that path (shards
        of one corpus built apart then score on one scale).
        """
        docs = list(documents)
        meta = _metadata(metadata, len(docs))
        if not docs:
            raise ColwgpuError("invalid input: no documents to index")
        id_list = [str(i) for i in range(len(docs))] if ids is None else _texts(ids, "id")
        p = os.fspath(path)
        core_model = None if model is None else model._core
        codec = None if codec_from is None else os.fspath(codec_from)
        if _is_vectors(docs[0]):
            vecs = [_as_vectors(d, f"document {i}") for i, d in enumerate(docs)]
            core = _Index.build_vectors(
                p, vecs, id_list, core_model, nbits, num_centroids, seed, wait, device, codec
            )
        elif model is None:
            raise ColwgpuError(
                "invalid input: documents are texts or images, so a model is needed to encode them"
            )
        elif model.takes_images:
            paths = [os.fspath(d) for d in docs]
            core = _Index.build_images(
                p, core_model, paths, id_list, nbits, num_centroids, seed, wait, codec
            )
        else:
            core = _Index.build_texts(
                p, core_model, _texts(docs, "document"), id_list, nbits, num_centroids, seed, wait, codec
            )
        index = cls(core, model, device)
        if meta is not None:
            keep = [(i, m) for i, m in zip(id_list, meta) if m != "null"]
            if keep:
                core.set_metadata([i for i, _ in keep], [m for _, m in keep], wait)
                index._reopen()
        return index

    @classmethod
    def open(
        cls,
        path: Union[str, os.PathLike],
        model: Optional[Model] = None,
        device: str = "auto",
    ) -> "Index":
        """Opens the index at ``path``. Text queries are encoded by ``model``, or
        by the model recorded in the index (opened on first use, on ``device``)."""
        return cls(_Index.open(os.fspath(path), device), model, device)

    @property
    def num_docs(self) -> int:
        return self._core.num_docs

    def __len__(self) -> int:
        return self._core.num_docs

    @property
    def dim(self) -> int:
        return self._core.dim

    @property
    def ids(self) -> List[str]:
        """Document ids, in index order."""
        return self._core.ids

    @property
    def path(self) -> str:
        return os.fspath(self._core.path)

    @property
    def model(self) -> Model:
        """The model text queries are encoded with (the index's own, opened on
        first use, when none was given)."""
        if self._model is None:
            self._model = Model._wrap(self._core.open_model(self._device))
        return self._model

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
        """The best ``k`` documents as ``(id, score)`` pairs, best first.

        ``queries``: one text or one ``(tokens, dim)`` array → one list of hits;
        a list of texts or of arrays → one list per query. ``ncells``,
        ``centroid_score_threshold`` and ``ndocs`` are PLAID's knobs (defaults
        for ``k`` when omitted); ``exhaustive`` scores every document exactly.
        ``filter``: a condition on the metadata's keys with ``?`` placeholders and
        its parameters, ``("year >= ? AND topic = ?", [2020, "biology"])`` (or
        the condition alone); it restricts the candidates before scoring.
        """
        knobs = (k, ncells, centroid_score_threshold, ndocs, exhaustive) + _filter(filter)
        if isinstance(queries, str):
            return self._core.search_texts(self.model._core, [queries], *knobs)[0]
        if isinstance(queries, np.ndarray):
            return self._core.search_vectors([_as_vectors(queries, "query")], *knobs)[0]
        items = list(queries)
        if not items:
            return []
        if _is_vectors(items[0]):
            vecs = [_as_vectors(q, f"query {i}") for i, q in enumerate(items)]
            return self._core.search_vectors(vecs, *knobs)
        return self._core.search_texts(self.model._core, _texts(items, "query"), *knobs)

    def _reopen(self) -> None:
        self._core = _Index.open(os.fspath(self._core.path), self._device)

    def add(
        self,
        documents: Sequence[Any],
        ids: Sequence[str],
        metadata: Optional[Sequence[Optional[dict]]] = None,
        update: bool = False,
        wait: bool = False,
    ) -> int:
        """Adds documents (texts encoded by the index's model, or ``(tokens, dim)``
        arrays) under new ``ids`` — or replaces existing ones with ``update=True``
        — in one atomic commit, compressed with the index's codec. Returns the
        index's new generation; this object then sees the new snapshot."""
        docs = list(documents)
        id_list = _texts(ids, "id")
        meta = _metadata(metadata, len(docs))
        if docs and _is_vectors(docs[0]):
            vecs = [_as_vectors(d, f"document {i}") for i, d in enumerate(docs)]
            gen = self._core.add_vectors(vecs, id_list, meta, update, wait)
        else:
            gen = self._core.add_texts(
                self.model._core, _texts(docs, "document"), id_list, meta, update, wait
            )
        self._reopen()
        return gen

    def update(
        self,
        documents: Sequence[Any],
        ids: Sequence[str],
        metadata: Optional[Sequence[Optional[dict]]] = None,
        wait: bool = False,
    ) -> int:
        """Replaces existing documents (delete + add under the same ids, one commit)."""
        return self.add(documents, ids, metadata, update=True, wait=wait)

    def delete(self, ids: Sequence[str], wait: bool = False) -> int:
        """Deletes documents by id (every id must exist), in one atomic commit."""
        gen = self._core.delete(_texts(ids, "id"), wait)
        self._reopen()
        return gen

    def metadata(self, ids: Sequence[str]) -> List[Optional[dict]]:
        """The metadata of documents ``ids`` (``None`` where one has none)."""
        return [None if m is None else json.loads(m) for m in self._core.metadata(_texts(ids, "id"))]

    def rerank(self, query: Any, ids: Sequence[str]) -> List[Hit]:
        """Exact MaxSim of one query (a text or a ``(tokens, dim)`` array)
        against the documents ``ids`` of this index, best first."""
        if isinstance(query, str):
            query = self.model.encode(query, is_query=True)
        return self._core.rerank_vectors(_as_vectors(query, "query"), _texts(ids, "id"))

    def __repr__(self) -> str:
        return repr(self._core)
