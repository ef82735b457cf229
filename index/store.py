"""Documents with stable ids, searchable through a FAISS index, persisted in one directory.

SQLite is the record: every document's id, text, JSON payload and float32 vector, committed on each
write. The FAISS index is derived from it and can always be rebuilt or retrained from the stored
vectors; ``save()`` writes an index snapshot so that the next open loads it instead of rebuilding.

Layout of a store directory::

    documents.sqlite      documents (id, text, payload, vector); meta (dim, factory, generation)
    snapshot.json         names the files of the last save() and the write generation they match
    index-<token>.faiss   the FAISS index (CPU copy)
    labels-<token>.npy    position in the index -> document id (-1: deleted or replaced)
    lock                  flock()ed while a VectorStore has the directory open

Search is inner product (``METRIC_INNER_PRODUCT``). The store does not normalise: pass unit vectors
and scores are cosine similarities.

Deletion: the index never calls ``remove_ids`` (slow on flat and IVF indexes, missing on HNSW).
The store keeps its own position -> id labels; deleting or replacing a document marks its position
dead, searches skip dead positions, and once a quarter of the positions are dead the index is
refilled from the stored vectors (training is kept). Ids stay stable whatever the index type.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import faiss
import numpy as np
import numpy.typing as npt

from baihua.index.locks import RWLock

# faiss-cpu only uses BLAS for Flat search from 128000 queries per call (its default), which a
# service never sends; at 20, batches of 256 queries ran 7x faster at 1M x 256 (DESIGN.md).
faiss.cvar.distance_compute_blas_threshold = 20

logger = logging.getLogger(__name__)

IdsLike = Sequence[int] | npt.NDArray[np.integer[Any]]

_FORMAT = "1"
_MAX_ID = 2**63 - 1  # SQLite INTEGER PRIMARY KEY and FAISS labels are signed 64-bit
_COMPACT_FRACTION = 0.25  # refill the index once this share of its positions is dead
_FILTER_OVERFETCH = 4  # first candidate list for a filtered search, in multiples of top_k
_FETCH_LIMIT = 4096  # widest candidate list asked of FAISS before an exact scan takes over
_GPU_MAX_K = 2048  # FAISS GPU k-selection limit
_SQL_CHUNK = 500  # ids per "IN (...)", well under SQLite's bound-variable limit
_SCAN_ROWS = 4096  # rows per step of an exact scan, bounding its memory
_KMEANS_POINTS_PER_CENTROID = 39  # below this faiss k-means warns that training is too thin


@dataclass(frozen=True)
class Document:
    """A stored document; its vector is read with ``VectorStore.vectors``."""

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


class DuplicateIdError(ValueError):
    """``add`` got an id already stored or repeated in the call; ``upsert`` replaces instead."""


class StoreMismatchError(ValueError):
    """A store directory was opened with another dim or factory than it was created with."""


class StoreLockedError(RuntimeError):
    """The store directory is already open, in this process or another."""


@dataclass(frozen=True)
class _Batch:
    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    texts: list[str]
    payloads: list[str]  # JSON


@dataclass(frozen=True)
class _Snapshot:
    index: Any
    labels: npt.NDArray[np.int64]
    generation: int
    exact_fallback: bool


class VectorStore:
    """Documents (id, text, JSON payload, vector) searchable by inner product through FAISS.

    Parameters
    ----------
    dim : int
        Vector dimension.
    factory : str
        FAISS ``index_factory`` string: "Flat" (exact), "IVF1024,Flat", "HNSW32",
        "OPQ16,IVF256,PQ16", ... The store manages ids itself, so no "IDMap" prefix. An index
        that needs training searches exactly (a Flat index) until about 39 vectors per centroid
        are stored, then trains on the stored vectors; ``train()`` does it at once.
    path : Path or None
        Directory to persist in (see ``open``); None keeps everything in memory.
    use_gpu : bool or None
        None: use GPU 0 when this faiss build has GPU support and sees a device, CPU otherwise
        (index types without a GPU version, such as HNSW, then stay on CPU). True: require it.
    search_params : str
        FAISS ParameterSpace settings applied to the index, e.g. "nprobe=16" or "efSearch=128".

    Thread safety: searches and reads run in parallel (serialised on a GPU index, which FAISS
    does not allow concurrently); add, upsert, delete, train and close run alone. One process
    per directory: a second open of the same directory raises ``StoreLockedError``.
    """

    # The index and its bookkeeping, set by _set_index: FAISS index (CPU or GPU), position -> id
    # labels (-1 dead), id -> position, dead position count, and "changed since the snapshot".
    _index: Any
    _on_gpu: bool
    _exact_fallback: bool
    _labels: npt.NDArray[np.int64]
    _positions: dict[int, int]
    _n_dead: int
    _dirty: bool

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        *,
        path: Path | None = None,
        use_gpu: bool | None = None,
        search_params: str = "",
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        self.dim = dim
        self.factory = factory
        self.search_params = search_params
        self.path = None if path is None else Path(path)
        factory_index = self._new_factory_index()
        self._min_train = _min_training_size(factory_index)
        self._apply_search_params(factory_index, on_gpu=False)
        self._use_gpu = use_gpu
        self._gpu = _gpu_resources(use_gpu)

        self._lock = RWLock()
        self._db_lock = threading.Lock()  # readers share one sqlite3 connection
        self._gpu_lock = threading.Lock()  # FAISS GPU indexes do not allow concurrent searches
        self._save_lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
        self._db = _connect(":memory:" if self.path is None else self.path / "documents.sqlite")
        try:
            if self.path is not None:
                self._lock_file = _lock_directory(self.path)
            self._generation = self._init_meta()
            self._load_index()
        except BaseException:
            self._release()
            raise

    @classmethod
    def open(
        cls,
        path: Path,
        dim: int,
        factory: str = "Flat",
        *,
        use_gpu: bool | None = None,
        search_params: str = "",
    ) -> VectorStore:
        """Open the store in ``path``, creating the directory when missing.

        An existing store must have been created with the same ``dim`` and ``factory``
        (``StoreMismatchError`` otherwise). Its index snapshot is loaded when it matches the
        committed documents, and rebuilt from them when it does not (writes after the last save).
        """
        return cls(dim, factory, path=path, use_gpu=use_gpu, search_params=search_params)

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
        with self._lock.write():
            stored = [i for i in batch.ids.tolist() if i in self._positions]
            if stored:
                raise DuplicateIdError(
                    f"ids already stored: {_preview(stored)}; use upsert() to replace them"
                )
            self._write(self._insert_statement(batch), remove=[], batch=batch)

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
        with self._lock.write():
            replaced = [i for i in batch.ids.tolist() if i in self._positions]
            self._write(self._insert_statement(batch), remove=replaced, batch=batch)

    def delete(self, ids: IdsLike) -> int:
        """Delete documents; returns how many existed (missing ids are ignored)."""
        wanted = _check_ids(ids)
        with self._lock.write():
            present = sorted({i for i in wanted.tolist() if i in self._positions})
            if present:

                def statement() -> None:
                    for chunk in _chunks(present):
                        self._db.execute(
                            f"DELETE FROM documents WHERE id IN ({_marks(chunk)})", chunk
                        )

                self._write(statement, remove=present, batch=None)
            return len(present)

    def train(self) -> None:
        """(Re)train the factory index on all stored vectors now and refill it.

        Use it to start an IVF/PQ index before the automatic threshold, or to retrain after the
        data drifted. Indexes without training (Flat, HNSW) are simply rebuilt.
        """
        with self._lock.write():
            ids, vectors = self._read_all_vectors()
            if not len(ids):
                raise ValueError("the store is empty: add documents before train()")
            try:
                self._build_index(ids, vectors, train=True)
            except RuntimeError as error:
                raise ValueError(
                    f"FAISS could not train {self.factory!r} on {len(ids)} stored vectors "
                    f"(about {self._min_train} are recommended): {error}"
                ) from None

    # ------------------------------------------------------------------------------------ reads

    def search(
        self, queries: npt.ArrayLike, top_k: int, filter: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """The ``top_k`` best documents per query row, best first.

        ``filter`` keeps documents whose payload has each given top-level key with an equal value.
        When at least ``top_k`` stored documents match, ``top_k`` hits are returned: candidates
        are fetched from FAISS in widening rounds, and an exact scan over the stored vectors takes
        over when the index cannot supply enough (IVF lists not probed, very selective filters).
        """
        q = self._check_vectors(queries, "queries")
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1; got {top_k!r}")
        top_k = int(top_k)
        _check_filter(filter)
        with self._lock.read():
            found = self._search_locked(q, top_k, filter or None)
            wanted = {i for hits in found for i, _ in hits}
            docs = self._load_documents(wanted)
        return [
            [Hit(i, score, docs[i].text, docs[i].payload) for i, score in hits] for hits in found
        ]

    def get(self, id: int) -> Document | None:
        """The stored document with this id, or None."""
        _check_id(id)
        with self._lock.read():
            return self._load_documents([int(id)]).get(int(id))

    def vectors(self, ids: IdsLike) -> npt.NDArray[np.float32]:
        """Stored vectors of ``ids`` in that order, shape (len(ids), dim); KeyError if missing."""
        wanted = _check_ids(ids).tolist()
        found: dict[int, npt.NDArray[np.float32]] = {}
        with self._lock.read(), self._db_lock:
            for chunk in _chunks(sorted(set(wanted))):
                rows = self._db.execute(
                    f"SELECT id, vector FROM documents WHERE id IN ({_marks(chunk)})", chunk
                )
                found.update((i, _from_blob(blob)) for i, blob in rows)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"ids not stored: {_preview(missing)}")
        if not wanted:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([found[i] for i in wanted])

    def iter_vectors(self, batch_size: int = 1024) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """Every stored (id, vector) in id order, read in batches; no lock is held between them."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
        last = -1
        while True:
            with self._lock.read(), self._db_lock:
                rows = self._db.execute(
                    "SELECT id, vector FROM documents WHERE id > ? ORDER BY id LIMIT ?",
                    (last, batch_size),
                ).fetchall()
            if not rows:
                return
            for i, blob in rows:
                yield i, _from_blob(blob)
            last = rows[-1][0]

    def ids(self) -> npt.NDArray[np.int64]:
        """All stored ids, ascending."""
        with self._lock.read():
            return np.sort(self._labels[self._labels >= 0])

    def __len__(self) -> int:
        with self._lock.read():
            return len(self._positions)

    @property
    def is_trained(self) -> bool:
        """False while an index that needs training waits for it (searches are exact meanwhile)."""
        return not self._exact_fallback

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a FAISS GPU index."""
        return self._on_gpu

    # ------------------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Write the index snapshot (documents are already committed); crash-safe.

        Each file goes to a temporary name, is fsynced and renamed; ``snapshot.json`` is replaced
        last, so a crash at any point leaves the previous snapshot loadable. Searches continue
        while saving; writes wait.
        """
        if self.path is None:
            raise ValueError("this store is in memory (path=None); use VectorStore.open(path, ...)")
        with self._lock.read(), self._save_lock:
            if not self._dirty:
                return
            token = uuid.uuid4().hex
            index_name, labels_name = f"index-{token}.faiss", f"labels-{token}.npy"
            cpu_index = self._cpu_index()
            _write_atomic(self.path / index_name, lambda p: faiss.write_index(cpu_index, str(p)))
            _write_atomic(self.path / labels_name, lambda p: np.save(p, self._labels))
            manifest = {
                "generation": self._generation,
                "index": index_name,
                "labels": labels_name,
                "exact_fallback": self._exact_fallback,
            }
            _write_atomic(self.path / "snapshot.json", lambda p: p.write_text(json.dumps(manifest)))
            self._dirty = False
            _remove_stale_files(self.path, keep={index_name, labels_name})

    def close(self) -> None:
        """Release the database and the directory.

        Unsaved index changes are not lost: the documents are committed and the next open
        rebuilds the index from them; call ``save()`` first to spare that rebuild.
        """
        with self._lock.write():
            self._release()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --------------------------------------------------------------------------------- internals

    def _new_factory_index(self) -> Any:
        if "IDMap" in self.factory:
            raise ValueError(
                f"factory {self.factory!r}: ids are managed by the store, drop the IDMap prefix"
            )
        try:
            return faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise ValueError(
                f"FAISS cannot build factory {self.factory!r} for dim={self.dim}: {error}"
            ) from None

    def _apply_search_params(self, index: Any, *, on_gpu: bool) -> None:
        if not self.search_params:
            return
        space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
        try:
            # faiss's stub lacks the overload taking a "name=value,..." string.
            space.set_index_parameters(index, self.search_params)  # type: ignore[arg-type]
        except RuntimeError as error:
            raise ValueError(
                f"search_params {self.search_params!r} do not apply to {self.factory!r}: {error}"
            ) from None

    def _to_device(self, index: Any) -> tuple[Any, bool]:
        """The index moved to GPU 0 when GPU use is on and FAISS has a GPU version of it."""
        if self._gpu is None:
            return index, False
        try:
            return faiss.index_cpu_to_gpu(self._gpu, 0, index), True
        except RuntimeError as error:
            if self._use_gpu:
                raise ValueError(
                    f"use_gpu=True but FAISS has no GPU version of {self.factory!r}: {error}"
                ) from None
            return index, False

    def _cpu_index(self) -> Any:
        if not self._on_gpu:
            return self._index
        with self._gpu_lock:
            return faiss.index_gpu_to_cpu(self._index)

    def _init_meta(self) -> int:
        """Record dim and factory in a new database, or check them in an existing one."""
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("format", _FORMAT), ("dim", str(self.dim)), ("factory", self.factory)]
                    + [("generation", "0")],
                )
            return 0
        if meta.get("format") != _FORMAT:
            raise StoreMismatchError(
                f"store at {self.path} has format {meta.get('format')!r}; this version reads "
                f"format {_FORMAT!r}"
            )
        if int(meta["dim"]) != self.dim or meta["factory"] != self.factory:
            raise StoreMismatchError(
                f"store at {self.path} was created with dim={meta['dim']}, "
                f"factory={meta['factory']!r}; asked for dim={self.dim}, factory={self.factory!r}. "
                "Open it with its own dim and factory, or use another directory."
            )
        return int(meta["generation"])

    def _load_index(self) -> None:
        """Load the snapshot if it matches the documents; otherwise rebuild from the documents."""
        snapshot = self._read_snapshot()
        if snapshot is not None and snapshot.generation == self._generation:
            index, on_gpu = self._to_device(snapshot.index)
            self._set_index(index, on_gpu, snapshot.exact_fallback, snapshot.labels)
            self._dirty = False
            return
        ids, vectors = self._read_all_vectors()
        if snapshot is not None and not snapshot.exact_fallback:
            index, on_gpu = self._to_device(snapshot.index)  # keeps its training
            self._fill(index, on_gpu, False, ids, vectors)
        else:
            self._build_index(ids, vectors, train=len(ids) >= self._min_train)

    def _read_snapshot(self) -> _Snapshot | None:
        if self.path is None or not (self.path / "snapshot.json").exists():
            return None
        try:
            manifest = json.loads((self.path / "snapshot.json").read_text())
            index = faiss.read_index(str(self.path / manifest["index"]))
            labels = np.load(self.path / manifest["labels"])
            if index.d != self.dim or index.ntotal != len(labels) or labels.dtype != np.int64:
                raise ValueError("index and labels do not match")
            return _Snapshot(index, labels, int(manifest["generation"]), manifest["exact_fallback"])
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            logger.warning(
                "ignoring unreadable index snapshot in %s (%s); rebuilding from documents",
                self.path,
                error,
            )
            return None

    def _build_index(
        self,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
        *,
        train: bool,
    ) -> None:
        """A new index over the given vectors: the factory index, trained on them if it needs
        training and ``train``; the exact Flat fallback if it needs training and not ``train``."""
        index = self._new_factory_index()
        exact_fallback = not index.is_trained and not train
        if exact_fallback:
            index = faiss.IndexFlatIP(self.dim)
        index, on_gpu = self._to_device(index)
        if not index.is_trained:
            index.train(vectors)
        self._fill(index, on_gpu, exact_fallback, ids, vectors)

    def _fill(
        self,
        index: Any,
        on_gpu: bool,
        exact_fallback: bool,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        """Empty a trained index, add the vectors and make it the store's index."""
        index.reset()
        if len(ids):
            index.add(vectors)
        self._set_index(index, on_gpu, exact_fallback, ids)

    def _set_index(
        self, index: Any, on_gpu: bool, exact_fallback: bool, labels: npt.NDArray[np.int64]
    ) -> None:
        if not exact_fallback:
            self._apply_search_params(index, on_gpu=on_gpu)
        self._index = index
        self._on_gpu = on_gpu
        self._exact_fallback = exact_fallback
        self._labels = labels.astype(np.int64)
        self._positions = {i: p for p, i in enumerate(self._labels.tolist()) if i >= 0}
        self._n_dead = len(self._labels) - len(self._positions)
        self._dirty = True

    def _write(
        self, statement: Callable[[], None], *, remove: Sequence[int], batch: _Batch | None
    ) -> None:
        """One write (caller holds the write lock): SQL and index change together or not at all."""
        try:
            with self._transaction():
                statement()
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'generation'",
                    (str(self._generation + 1),),
                )
                self._index_remove(remove)
                if batch is not None:
                    self._index_add(batch.ids, batch.vectors)
                self._maintain()
        except BaseException:
            # The documents rolled back; bring the index back to them.
            self._fill(self._index, self._on_gpu, self._exact_fallback, *self._read_all_vectors())
            raise
        self._generation += 1

    def _insert_statement(self, batch: _Batch) -> Callable[[], None]:
        rows = [
            (i, text, payload, _to_blob(vector))
            for i, text, payload, vector in zip(
                batch.ids.tolist(), batch.texts, batch.payloads, batch.vectors, strict=True
            )
        ]

        def statement() -> None:
            self._db.executemany(
                "INSERT OR REPLACE INTO documents (id, text, payload, vector) VALUES (?, ?, ?, ?)",
                rows,
            )

        return statement

    def _index_add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        start = len(self._labels)
        self._index.add(vectors)
        self._labels = np.concatenate([self._labels, ids])
        self._positions.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))
        self._dirty = True

    def _index_remove(self, ids: Sequence[int]) -> None:
        for i in ids:
            position = self._positions.pop(i)
            self._labels[position] = -1
            self._n_dead += 1
        self._dirty = self._dirty or bool(ids)

    def _maintain(self) -> None:
        """Train once enough vectors are stored; refill once many positions are dead."""
        if self._exact_fallback and len(self._positions) >= self._min_train:
            self._build_index(*self._read_all_vectors(), train=True)
        elif self._n_dead > _COMPACT_FRACTION * len(self._labels):
            self._fill(self._index, self._on_gpu, self._exact_fallback, *self._read_all_vectors())

    def _search_locked(
        self, queries: npt.NDArray[np.float32], top_k: int, filter: dict[str, Any] | None
    ) -> list[list[tuple[int, float]]]:
        """(id, score) lists per query; widens the FAISS fetch, then scans exactly if needed."""
        found: list[list[tuple[int, float]]] = [[] for _ in range(len(queries))]
        n_positions = len(self._labels)
        if not self._positions:
            return found
        limit = min(n_positions, _GPU_MAX_K if self._on_gpu else max(_FETCH_LIMIT, top_k))
        fetch = top_k if filter is None and not self._n_dead else _FILTER_OVERFETCH * top_k
        fetch = min(fetch, limit)
        payloads: dict[int, dict[str, Any]] = {}
        pending, exact = list(range(len(queries))), []
        while pending:
            scores, positions = self._index_search(queries[pending], fetch)
            ids = np.where(positions >= 0, self._labels[np.maximum(positions, 0)], -1)
            if filter is not None:
                new = {i for i in ids[ids >= 0].tolist() if i not in payloads}
                payloads.update((i, d.payload) for i, d in self._load_documents(new).items())
            unresolved = []
            for row, query in enumerate(pending):
                hits = []
                for i, score in zip(ids[row].tolist(), scores[row].tolist(), strict=True):
                    if i >= 0 and (filter is None or _matches(payloads[i], filter)):
                        hits.append((i, score))
                        if len(hits) == top_k:
                            break
                exhausted = bool((positions[row] < 0).any())
                if len(hits) == top_k or (fetch == n_positions and not exhausted):
                    found[query] = hits
                elif exhausted or fetch >= limit:
                    exact.append(query)
                else:
                    unresolved.append(query)
            pending = unresolved
            fetch = min(2 * fetch, limit)
        if exact:
            exact_hits = self._exact_search(queries[exact], top_k, filter)
            for query, hits in zip(exact, exact_hits, strict=True):
                found[query] = hits
        return found

    def _index_search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if self._on_gpu:
            with self._gpu_lock:
                return self._index.search(queries, k)  # type: ignore[no-any-return]
        return self._index.search(queries, k)  # type: ignore[no-any-return]

    def _exact_search(
        self, queries: npt.NDArray[np.float32], top_k: int, filter: dict[str, Any] | None
    ) -> list[list[tuple[int, float]]]:
        """Score every stored (matching) document, streaming the table in bounded steps."""
        best_ids = np.empty((len(queries), 0), dtype=np.int64)
        best_scores = np.empty((len(queries), 0), dtype=np.float32)
        with self._db_lock:
            cursor = self._db.execute("SELECT id, payload, vector FROM documents")
            while rows := cursor.fetchmany(_SCAN_ROWS):
                if filter is not None:
                    rows = [r for r in rows if _matches(json.loads(r[1]), filter)]
                if not rows:
                    continue
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                scores = queries @ np.stack([_from_blob(r[2]) for r in rows]).T
                best_scores = np.concatenate([best_scores, scores], axis=1)
                best_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
                keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :top_k]
                best_scores = np.take_along_axis(best_scores, keep, axis=1)
                best_ids = np.take_along_axis(best_ids, keep, axis=1)
        return [
            list(zip(row_ids.tolist(), row_scores.tolist(), strict=True))
            for row_ids, row_scores in zip(best_ids, best_scores, strict=True)
        ]

    def _load_documents(self, ids: Iterable[int]) -> dict[int, Document]:
        wanted = sorted(ids)
        docs: dict[int, Document] = {}
        with self._db_lock:
            for chunk in _chunks(wanted):
                rows = self._db.execute(
                    f"SELECT id, text, payload FROM documents WHERE id IN ({_marks(chunk)})", chunk
                )
                docs.update(
                    (i, Document(i, text, json.loads(payload))) for i, text, payload in rows
                )
        return docs

    def _read_all_vectors(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        rows = self._db.execute("SELECT id, vector FROM documents ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        blob = b"".join(r[1] for r in rows)
        return ids, np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(-1, self.dim)

    def _check_vectors(self, vectors: npt.ArrayLike, name: str) -> npt.NDArray[np.float32]:
        array = np.asarray(vectors)
        if array.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be real numbers; got dtype {array.dtype}")
        if array.ndim != 2 or array.shape[1] != self.dim:
            hint = "; wrap a single vector as v[None, :]" if array.ndim == 1 else ""
            raise ValueError(f"{name} must have shape (n, {self.dim}); got {array.shape}{hint}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        if len(bad):
            raise ValueError(f"{name} contain NaN or infinity in rows {_preview(bad.tolist())}")
        return array

    def _check_batch(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None,
    ) -> _Batch:
        checked_ids = _check_ids(ids)
        checked_vectors = self._check_vectors(vectors, "vectors")
        n = len(checked_ids)
        unique, counts = np.unique(checked_ids, return_counts=True)
        if (counts > 1).any():
            raise DuplicateIdError(f"ids repeat within the call: {_preview(unique[counts > 1])}")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a sequence of str, one per id")
        if payloads is None:
            payloads = [None] * n
        for name, count in (("vectors", len(checked_vectors)), ("texts", len(texts))):
            if count != n:
                raise ValueError(f"got {n} ids but {count} {name}")
        if len(payloads) != n:
            raise ValueError(f"got {n} ids but {len(payloads)} payloads")
        return _Batch(
            checked_ids, checked_vectors, list(texts), [_payload_json(p) for p in payloads]
        )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _release(self) -> None:
        self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _min_training_size(index: Any) -> int:
    """Stored vectors needed before training: 39 per centroid of the largest k-means inside."""
    if index.is_trained:
        return 0
    centroids = 0
    parts = [index]
    while parts:
        part: Any = faiss.downcast_index(parts.pop())
        if isinstance(part, faiss.IndexPreTransform):
            parts.append(part.index)
            chain: Any = part.chain  # a SWIG vector; faiss's stub calls it a list
            for k in range(chain.size()):
                if isinstance(faiss.downcast_VectorTransform(chain.at(k)), faiss.OPQMatrix):
                    centroids = max(centroids, 256)  # OPQ trains an 8-bit PQ
        if isinstance(part, faiss.IndexIVF):
            centroids = max(centroids, part.nlist)
        if isinstance(getattr(part, "pq", None), faiss.ProductQuantizer):
            centroids = max(centroids, part.pq.ksub)
        if getattr(part, "storage", None) is not None:
            parts.append(part.storage)
    # Unknown trainable parts (scalar or additive quantizers, PCA): assume an 8-bit codebook.
    return _KMEANS_POINTS_PER_CENTROID * (centroids or 256)


def _gpu_resources(use_gpu: bool | None) -> Any:
    """FAISS GPU resources when the store should run on GPU, else None."""
    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if use_gpu and not available:
        raise ValueError(
            "use_gpu=True but FAISS has no GPU here (a faiss-cpu build or no visible device); "
            "install faiss-gpu or pass use_gpu=None"
        )
    return faiss.StandardGpuResources() if available and use_gpu is not False else None


def _connect(target: Path | str) -> sqlite3.Connection:
    # One connection shared by threads, serialised by the store's locks; explicit transactions.
    db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS documents ("
        "id INTEGER PRIMARY KEY, text TEXT NOT NULL, payload TEXT NOT NULL, vector BLOB NOT NULL)"
    )
    return db


def _lock_directory(path: Path) -> IO[bytes]:
    handle = open(path / "lock", "ab")  # noqa: SIM115 - held open for the store's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreLockedError(
            f"store at {path} is already open (in this or another process); close it first, "
            "one process owns a store"
        ) from None
    return handle


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write to a temporary file, fsync it, rename it over ``path``, fsync the directory."""
    temporary = path.with_name(f"{path.stem}.tmp-{uuid.uuid4().hex}{path.suffix}")
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_stale_files(path: Path, keep: set[str]) -> None:
    """Drop index files of older snapshots and temporaries of interrupted saves."""
    for file in path.iterdir():
        stale_snapshot = file.suffix in (".faiss", ".npy") and file.name not in keep
        if stale_snapshot or ".tmp-" in file.name:
            file.unlink(missing_ok=True)


def _check_ids(ids: IdsLike) -> npt.NDArray[np.int64]:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"ids must be a 1-D sequence of integers; got shape {array.shape}")
    if not array.size:
        return np.empty(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        raise ValueError(f"ids must be integers; got dtype {array.dtype}: {_preview(array)}")
    bad = array[(array < 0) | (array > _MAX_ID)]
    if bad.size:
        raise ValueError(f"ids must be in [0, 2**63 - 1]; got {_preview(bad)}")
    return array.astype(np.int64)


def _check_id(id: object) -> None:
    if isinstance(id, bool | np.bool_) or not isinstance(id, int | np.integer):
        raise ValueError(f"id must be an integer; got {id!r}")
    if not 0 <= id <= _MAX_ID:
        raise ValueError(f"id must be in [0, 2**63 - 1]; got {id}")


def _check_filter(filter: object) -> None:
    if filter is None:
        return
    if not isinstance(filter, dict) or not all(isinstance(k, str) for k in filter):
        raise ValueError(f"filter must be a dict of payload key -> value; got {filter!r}")


def _payload_json(payload: object) -> str:
    if payload is None:
        return "{}"
    if not isinstance(payload, dict) or not all(isinstance(k, str) for k in payload):
        raise ValueError(f"payload must be a dict with str keys; got {payload!r}")
    try:
        return json.dumps(payload, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"payload is not JSON-serialisable ({error}): {payload!r}") from None


def _matches(payload: dict[str, Any], filter: dict[str, Any]) -> bool:
    # True == 1 in Python but not in JSON: a bool only matches a bool.
    return all(
        key in payload
        and payload[key] == value
        and isinstance(payload[key], bool) == isinstance(value, bool)
        for key, value in filter.items()
    )


def _to_blob(vector: npt.NDArray[np.float32]) -> bytes:
    return vector.astype("<f4").tobytes()


def _from_blob(blob: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _SQL_CHUNK):
        yield list(ids[start : start + _SQL_CHUNK])


def _marks(chunk: Sequence[int]) -> str:
    return ", ".join("?" * len(chunk))


def _preview(values: Sequence[Any] | npt.NDArray[Any], limit: int = 10) -> str:
    shown = [v.item() if isinstance(v, np.generic) else v for v in list(values)[:limit]]
    return f"{shown}" + (f" and {len(values) - limit} more" if len(values) > limit else "")
