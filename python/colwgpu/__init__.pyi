import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

Hit = Tuple[str, float]
Filter = Union[str, Tuple[str, Sequence[Any]]]
Vectors = npt.NDArray[np.float32]
PathLike = Union[str, os.PathLike[str]]

class ColwgpuError(Exception): ...
class IndexLockedError(ColwgpuError): ...

class Model:
    def __init__(
        self,
        path: PathLike,
        device: str = "auto",
        batch_size: int = 32,
        base: Optional[PathLike] = None,
        precision: str = "f32",
    ) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def takes_images(self) -> bool: ...
    @property
    def path(self) -> str: ...
    def describe(self) -> str: ...
    @overload
    def encode(self, texts: str, is_query: bool = False) -> Vectors: ...
    @overload
    def encode(self, texts: Sequence[str], is_query: bool = False) -> List[Vectors]: ...
    @overload
    def encode_images(self, images: PathLike) -> Vectors: ...
    @overload
    def encode_images(self, images: Sequence[PathLike]) -> List[Vectors]: ...

class ColBERT(Model): ...
class ColQwen2(Model): ...
class ColPali(Model): ...

class Index:
    @classmethod
    def build(
        cls,
        path: PathLike,
        model: Optional[Model],
        documents: Sequence[Union[str, PathLike, npt.ArrayLike]],
        ids: Optional[Sequence[str]] = None,
        metadata: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
        nbits: int = 2,
        num_centroids: Optional[int] = None,
        seed: int = 12345,
        device: str = "auto",
        wait: bool = False,
        codec_from: Optional[PathLike] = None,
    ) -> Index: ...
    @classmethod
    def open(cls, path: PathLike, model: Optional[Model] = None, device: str = "auto") -> Index: ...
    @property
    def num_docs(self) -> int: ...
    def __len__(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def ids(self) -> List[str]: ...
    @property
    def path(self) -> str: ...
    @property
    def model(self) -> Model: ...
    @overload
    def search(
        self,
        queries: Union[str, Vectors],
        k: int = 10,
        *,
        ncells: Optional[int] = None,
        centroid_score_threshold: Optional[float] = None,
        ndocs: Optional[int] = None,
        exhaustive: bool = False,
        filter: Optional[Filter] = None,
    ) -> List[Hit]: ...
    @overload
    def search(
        self,
        queries: Sequence[Union[str, npt.ArrayLike]],
        k: int = 10,
        *,
        ncells: Optional[int] = None,
        centroid_score_threshold: Optional[float] = None,
        ndocs: Optional[int] = None,
        exhaustive: bool = False,
        filter: Optional[Filter] = None,
    ) -> List[List[Hit]]: ...
    def rerank(self, query: Union[str, npt.ArrayLike], ids: Sequence[str]) -> List[Hit]: ...
    def add(
        self,
        documents: Sequence[Union[str, npt.ArrayLike]],
        ids: Sequence[str],
        metadata: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
        update: bool = False,
        wait: bool = False,
    ) -> int: ...
    def update(
        self,
        documents: Sequence[Union[str, npt.ArrayLike]],
        ids: Sequence[str],
        metadata: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
        wait: bool = False,
    ) -> int: ...
    def delete(self, ids: Sequence[str], wait: bool = False) -> int: ...
    def metadata(self, ids: Sequence[str]) -> List[Optional[Dict[str, Any]]]: ...
