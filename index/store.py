"""The store protocol the service and the CLI call, and the types every engine shares.

An engine (``FaissStore``: FAISS over SQLite; others behind the same protocol) holds documents —
an int64 id, a text, a JSON payload and a float32 vector — and searches them by inner product.
Vectors are not normalised by the store: pass unit vectors and scores are cosine similarities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from baihua.core.spec import EmbeddingSpec

IdsLike = Sequence[int] | npt.NDArray[np.integer[Any]]


@dataclass(frozen=True)
class Document:
    """A stored document; its vector is read with ``Store.vectors``."""

    id: int
    text: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    """One search result: a document and its inner product with the query (and its geodesic
    distance when ``index.geodesic`` re-ranked it)."""

    id: int
    score: float
    text: str
    payload: dict[str, Any]
    geodesic: float | None = None


@runtime_checkable
class Store(Protocol):
    """Documents with stable ids, searched by inner product; what the service and CLI rely on.

    Every write is committed before it returns (an acknowledged write survives a crash); ``save``
    only persists what spares work on the next open. Implementations are thread-safe: searches
    run in parallel, writes alone.
    """

    dim: int
    spec: EmbeddingSpec | None
    """The space of the stored vectors (checked and recorded on open); None if never given."""

    @property
    def persistent(self) -> bool:
        """Whether ``save`` has somewhere to write (a store kept in memory has not)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other processes may write to it too (a Milvus server): what one process
        builds from the stored documents (the geodesic graph) cannot know their writes."""
        ...

    def add(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Store new documents; all or none: an id already stored raises ``DuplicateIdError``."""
        ...

    def upsert(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Store documents, replacing vector, text and payload of the ids that already exist."""
        ...

    def delete(self, ids: IdsLike) -> int:
        """Delete documents; returns how many existed (missing ids are ignored)."""
        ...

    def reserve_ids(self, n: int, *, after: int = -1) -> list[int]:
        """``n`` new ids above ``after`` and above every id ever stored or reserved, deleted ones
        included; the counter is committed first, so no id is handed out twice, even after a
        crash. Raises ``IdsExhaustedError`` when they would pass 2**63 - 1."""
        ...

    def get(self, id: int) -> Document | None:
        """The stored document with this id, or None."""
        ...

    def get_many(self, ids: IdsLike) -> list[Document]:
        """The stored documents among ``ids``, in that order (missing ids are left out)."""
        ...

    def scan(
        self, after: int = -1, limit: int = 100, filter: dict[str, Any] | None = None
    ) -> list[Document]:
        """Up to ``limit`` documents with id > ``after`` whose payload matches ``filter``, in id
        order: pass the last id of a page as ``after`` to read the next."""
        ...

    def delete_where(self, filter: dict[str, Any]) -> int:
        """Delete the documents whose payload matches ``filter``; returns how many."""
        ...

    def set_payload(self, id: int, payload: dict[str, Any]) -> bool:
        """Replace a document's payload, keeping its text and vector; whether it exists."""
        ...

    def search(
        self, queries: npt.ArrayLike, top_k: int, filter: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """The ``top_k`` best documents per query row whose payload matches ``filter`` (the
        language of ``index.filters``; ``FilterError`` when malformed)."""
        ...

    def search_ids(
        self, queries: npt.ArrayLike, top_k: int, filter: dict[str, Any] | None = None
    ) -> list[list[tuple[int, float]]]:
        """As ``search``, each hit only as (id, score): no text or payload is read (hybrid
        search's dense candidates, most of which the fusion drops)."""
        ...

    def vectors(self, ids: IdsLike) -> npt.NDArray[np.float32]:
        """Stored vectors of ``ids`` in that order; KeyError if one is missing."""
        ...

    def iter_vectors(self, batch_size: int = 1024) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """Every stored (id, vector) in id order, read in batches."""
        ...

    def ids(self, filter: dict[str, Any] | None = None) -> npt.NDArray[np.int64]:
        """The stored ids whose payload matches ``filter`` (all without one), ascending."""
        ...

    def __len__(self) -> int: ...

    def count(self, filter: dict[str, Any] | None = None) -> int:
        """How many stored documents match ``filter`` (all of them without one)."""
        ...

    def save(self) -> None:
        """Persist what lets the next open start fast (documents are committed already)."""
        ...

    def close(self) -> None:
        """Release the engine; committed documents stay."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
