"""What every ``Store`` engine does the same way, written once: the checks of each call, the
all-or-nothing duplicate check of ``add``, the checks of ``reserve_ids``, the refusal of an
empty filter in ``delete_where``, the reads built from a few lookups, and the vector-space record.

An engine (``FaissStore``, ``MilvusStore``) subclasses ``StoreBase`` and implements the methods
marked abstract: how it locks, writes, looks up and counts documents, how it reserves ids, and
where it keeps its space. The base calls them with checked arguments, inside ``_writing()`` or
``_reading()``: an engine's own methods check no arguments and take neither side of the
read/write lock (only ``_id_lock``, where a write moves what ``_reserve`` hands out).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from baihua.core.spec import EmbeddingSpec, check_space
from baihua.index.errors import (
    DuplicateIdError,
    IdsExhaustedError,
    StoreInputError,
    StoreSettingError,
    preview,
)
from baihua.index.filters import Filter, FilterError, parse_filter
from baihua.index.store import Document, Hit, IdsLike
from baihua.index.validation import (
    MAX_ID,
    Batch,
    check_batch,
    check_batch_size,
    check_id,
    check_ids,
    check_top_k,
    check_vectors,
    payload_json,
)

logger = logging.getLogger(__name__)


class StoreBase(ABC):
    """The engine-neutral half of the ``Store`` protocol (see ``store.Store`` for the contract).

    Class attributes an engine sets: ``max_top_k`` and ``max_text_bytes`` (its limits, None for
    none) and ``other_space_hint`` (what to do when opened in another vector space).
    """

    max_top_k: ClassVar[int | None] = None
    max_text_bytes: ClassVar[int | None] = None
    other_space_hint: ClassVar[str]

    dim: int
    spec: EmbeddingSpec | None

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise StoreSettingError("dim", dim, f"dim must be a positive integer; got {dim!r}")
        self.dim = dim
        self._id_lock = threading.Lock()  # orders id reservations; taken inside a write

    # ----------------------------------------------------------------------------------- writes

    def add(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Store new documents; all or none: any id already stored raises ``DuplicateIdError``."""
        batch = self._check_batch(ids, vectors, texts, payloads)
        if not len(batch.ids):
            return
        with self._writing():
            stored = self._stored(batch.ids.tolist())
            if stored:
                raise DuplicateIdError(stored, stored=True)
            self._put(batch, replace=False)

    def upsert(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Store documents, replacing vector, text and payload of the ids that already exist."""
        batch = self._check_batch(ids, vectors, texts, payloads)
        if not len(batch.ids):
            return
        with self._writing():
            self._put(batch, replace=True)

    def delete(self, ids: IdsLike) -> int:
        """Delete documents; returns how many existed (missing ids are ignored)."""
        wanted = sorted(set(check_ids(ids).tolist()))
        with self._writing():
            present = self._stored(wanted)
            if present:
                self._remove(present)
        return len(present)

    def delete_where(self, filter: dict[str, Any]) -> int:
        """Delete the documents whose payload matches ``filter``; returns how many."""
        tree = parse_filter(filter)
        if tree is None:
            raise FilterError(
                "filter",
                f"filter {filter!r} matches every document; delete the store to remove them all",
            )
        with self._writing():
            doomed = self._ids_after(-1, None, tree)
            if doomed:
                self._remove(doomed)
        return len(doomed)

    def set_payload(self, id: int, payload: dict[str, Any]) -> bool:
        """Replace a document's payload, keeping its text and vector; whether it exists."""
        checked, encoded = check_id(id), payload_json(payload)
        with self._payload_writing():
            return self._replace_payload(checked, encoded)

    def reserve_ids(self, n: int, *, after: int = -1) -> list[int]:
        """``n`` new ids above ``after`` and above every id ever stored or reserved (deleted ones
        included), committed before they are returned; ``IdsExhaustedError`` past 2**63 - 1."""
        if n < 0:
            raise StoreInputError("n", f"n must be >= 0; got {n}")
        if not n:
            return []
        with self._id_lock:
            first = self._reserve(n, after + 1)
        return list(range(first, first + n))

    # ------------------------------------------------------------------------------------ reads

    def search(
        self, queries: npt.ArrayLike, top_k: int, filter: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """The ``top_k`` best documents per query row, best first; ``filter`` (the language of
        ``index.filters``) keeps the documents whose payload matches (``FilterError`` when
        malformed)."""
        q, top_k, tree = self._search_args(queries, top_k, filter)
        if not len(q):
            return []
        with self._reading():
            return self._search(q, top_k, tree)

    def search_ids(
        self, queries: npt.ArrayLike, top_k: int, filter: dict[str, Any] | None = None
    ) -> list[list[tuple[int, float]]]:
        """As ``search``, each hit only as (id, score): no text or payload is read."""
        q, top_k, tree = self._search_args(queries, top_k, filter)
        if not len(q):
            return []
        with self._reading():
            return self._search_ids(q, top_k, tree)

    def _search_args(
        self, queries: npt.ArrayLike, top_k: int, filter: dict[str, Any] | None
    ) -> tuple[npt.NDArray[np.float32], int, Filter | None]:
        q = check_vectors(queries, self.dim, "queries")
        top_k = check_top_k(top_k)
        if self.max_top_k is not None and top_k > self.max_top_k:
            raise StoreInputError(
                "top_k", f"top_k must be at most {self.max_top_k} with {self._engine}; got {top_k}"
            )
        return q, top_k, parse_filter(filter)

    def get(self, id: int) -> Document | None:
        """The stored document with this id, or None."""
        checked = check_id(id)
        with self._reading():
            return self._documents([checked]).get(checked)

    def get_many(self, ids: IdsLike) -> list[Document]:
        """The stored documents among ``ids``, in that order (missing ids are left out)."""
        wanted = check_ids(ids).tolist()
        with self._reading():
            found = self._documents(sorted(set(wanted)))
        return [found[i] for i in wanted if i in found]

    def scan(
        self, after: int = -1, limit: int = 100, filter: dict[str, Any] | None = None
    ) -> list[Document]:
        """Up to ``limit`` documents with id > ``after`` matching ``filter``, in id order."""
        tree = parse_filter(filter)
        limit = check_batch_size(limit)
        with self._reading():
            ids = self._ids_after(max(int(after), -1), limit, tree)
            found = self._documents(ids)
        return [found[i] for i in ids if i in found]

    def vectors(self, ids: IdsLike) -> npt.NDArray[np.float32]:
        """Stored vectors of ``ids`` in that order, shape (len(ids), dim); KeyError if missing."""
        wanted = check_ids(ids).tolist()
        with self._reading():
            found = self._vectors(sorted(set(wanted)))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"ids not stored: {preview(missing)}")
        if not wanted:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([found[i] for i in wanted])

    def iter_vectors(self, batch_size: int = 1024) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """Every stored (id, vector) in id order, read in batches; no lock is held between them."""
        batch_size = check_batch_size(batch_size)
        last = -1
        while True:
            with self._reading():
                rows = self._vectors_after(last, batch_size)
            if not rows:
                return
            yield from rows
            last = rows[-1][0]

    def ids(self, filter: dict[str, Any] | None = None) -> npt.NDArray[np.int64]:
        """The stored ids whose payload matches ``filter`` (all without one), ascending."""
        tree = parse_filter(filter)
        with self._reading():
            return np.array(self._ids_after(-1, None, tree), dtype=np.int64)

    def __len__(self) -> int:
        return self.count()

    def count(self, filter: dict[str, Any] | None = None) -> int:
        """How many stored documents match ``filter`` (all of them without one)."""
        tree = parse_filter(filter)
        with self._reading():
            return self._count(tree)

    @property
    @abstractmethod
    def persistent(self) -> bool:
        """Whether ``save`` has somewhere to write (a store kept in memory has not)."""

    @property
    @abstractmethod
    def shared(self) -> bool:
        """Whether other processes may write to it too (a Milvus server)."""

    @abstractmethod
    def save(self) -> None:
        """Persist what lets the next open start fast (documents are committed already)."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine; committed documents stay."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------- the engine's part

    @abstractmethod
    def _writing(self) -> AbstractContextManager[Any]:
        """Held around every write, alone: ``add``'s duplicate check and insert are one step."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Any]:
        """Held around every read."""

    def _payload_writing(self) -> AbstractContextManager[Any]:
        """Held around ``set_payload``: ``_writing()`` unless an engine's payloads live apart
        from what its readers share."""
        return self._writing()

    @abstractmethod
    def _stored(self, ids: Sequence[int]) -> list[int]:
        """Which of ``ids`` (distinct) are stored, ascending."""

    @abstractmethod
    def _put(self, batch: Batch, *, replace: bool) -> None:
        """Write ``batch`` (``replace``: over the documents of its ids that are stored) and move
        what ``_reserve`` hands out above its ids."""

    @abstractmethod
    def _remove(self, ids: Sequence[int]) -> None:
        """Delete the documents of ``ids``, all of them stored."""

    @abstractmethod
    def _replace_payload(self, id: int, payload: str) -> bool:
        """Set the JSON ``payload`` of document ``id``; False when it is not stored."""

    @abstractmethod
    def _reserve(self, n: int, first: int) -> int:
        """The first of ``n`` (>= 1) consecutive ids, none below ``first``, that were never
        stored or reserved, recorded as reserved before this returns (``_id_lock`` held);
        ``IdsExhaustedError`` past 2**63 - 1 (``check_room``)."""

    @abstractmethod
    def _search(
        self, queries: npt.NDArray[np.float32], top_k: int, tree: Filter | None
    ) -> list[list[Hit]]:
        """One list of hits per query row (at least one row), best first."""

    @abstractmethod
    def _search_ids(
        self, queries: npt.NDArray[np.float32], top_k: int, tree: Filter | None
    ) -> list[list[tuple[int, float]]]:
        """One list of (id, score) per query row (at least one row), best first."""

    @abstractmethod
    def _documents(self, ids: Collection[int]) -> dict[int, Document]:
        """The stored documents among ``ids`` (distinct) by id."""

    @abstractmethod
    def _vectors(self, ids: Collection[int]) -> dict[int, npt.NDArray[np.float32]]:
        """The stored vectors among ``ids`` (distinct) by id."""

    @abstractmethod
    def _vectors_after(self, after: int, limit: int) -> list[tuple[int, npt.NDArray[np.float32]]]:
        """Up to ``limit`` stored (id, vector) with id > ``after``, ascending; empty only when
        no id above ``after`` is stored."""

    @abstractmethod
    def _ids_after(self, after: int, limit: int | None, tree: Filter | None) -> list[int]:
        """The smallest ``limit`` (None: all) ids above ``after`` whose payload matches ``tree``,
        ascending."""

    @abstractmethod
    def _count(self, tree: Filter | None) -> int:
        """How many stored documents match ``tree``."""

    @abstractmethod
    def _where(self) -> str:
        """The store in words, for messages: "the index at /srv/data/index"."""

    @abstractmethod
    def _recorded_spec(self) -> dict[str, Any] | None:
        """The recorded space of the stored vectors, as ``EmbeddingSpec.to_dict`` wrote it."""

    @abstractmethod
    def _write_spec(self, spec: EmbeddingSpec) -> None:
        """Record ``spec`` as the space of the stored vectors."""

    # -------------------------------------------------------------------------------- internals

    @property
    def _engine(self) -> str:
        return type(self).__name__

    def _check_batch(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None,
    ) -> Batch:
        batch = check_batch(ids, vectors, texts, payloads, self.dim)
        limit = self.max_text_bytes
        long = [i for i, t in enumerate(batch.texts) if limit and len(t.encode()) > limit]
        if long:
            raise StoreInputError(
                "texts",
                f"texts longer than {limit} bytes of UTF-8 ({self._engine}'s limit) at "
                f"positions {preview(long)}",
            )
        return batch

    def _check_spec(self, spec: EmbeddingSpec | None) -> EmbeddingSpec | None:
        """The space of the stored vectors: ``spec`` once checked against the recorded one, else
        the recorded one. Documents of another space refuse ``spec``; an empty store takes it
        (``_record_spec`` records it once every check of the open passed)."""
        recorded = self._recorded_spec()
        if spec is None:
            return None if recorded is None else EmbeddingSpec.from_dict(recorded)
        if recorded == spec.to_dict():
            return spec
        stored = self._count(None)
        if recorded is not None and stored:
            check_space(recorded, spec, what=self._where(), hint=self.other_space_hint)
        elif stored:
            logger.warning(
                "%s predates vector-space records: taking its %d vectors to be of %s",
                self._where(),
                stored,
                spec.summary(),
            )
        return spec

    def _record_spec(self) -> None:
        """Record ``self.spec`` where the record differs (the last step of an open)."""
        if self.spec is not None and self._recorded_spec() != self.spec.to_dict():
            self._write_spec(self.spec)


def check_room(first: int, n: int) -> None:
    """Raise ``IdsExhaustedError`` when ``n`` ids from ``first`` would pass 2**63 - 1."""
    if first + n - 1 > MAX_ID:
        raise IdsExhaustedError(n, first - 1)
