"""FAISS over SQLite: the ``Store`` of one machine, persisted in one directory.

SQLite is the record (``database.py``): every document's id, text, JSON payload and float32 vector,
committed on each write. The FAISS index (``faiss_index.py``) is derived from it and can always be
rebuilt or retrained from the stored vectors; ``save()`` writes an index snapshot
(``snapshot.py``) so that the next open loads it instead of rebuilding.

Layout of a store directory::

    documents.sqlite      documents (id, text, payload, vector); meta (format, dim, factory,
                          generation, spec: the EmbeddingSpec of the vectors as JSON)
    snapshot.json         names the files of the last save() and the write generation they match
    index-<token>.faiss   the FAISS index (CPU copy)
    labels-<token>.npy    position in the index -> document id (-1: deleted or replaced)
    lock                  flock()ed while a FaissStore has the directory open
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from baihua.core.spec import EmbeddingSpec, check_space
from baihua.index import planning
from baihua.index.database import DocumentDatabase
from baihua.index.faiss_index import FaissIndex
from baihua.index.filters import FilterError, parse_filter
from baihua.index.locks import RWLock
from baihua.index.snapshot import Snapshot, read_snapshot, write_snapshot
from baihua.index.store import (
    Document,
    DuplicateIdError,
    Hit,
    IdsLike,
    StoreLockedError,
    StoreMismatchError,
)
from baihua.index.validation import (
    Batch,
    check_batch,
    check_batch_size,
    check_id,
    check_ids,
    check_top_k,
    check_vectors,
    payload_json,
    preview,
)

FORMAT = "1"

logger = logging.getLogger(__name__)


class FaissStore:
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
    spec : EmbeddingSpec or None
        The space of the vectors that will be written and searched. A store holding documents
        records its space and refuses another (``SpecMismatchError``, listing the fields); an empty
        store takes the new one. None checks nothing and keeps what is recorded.

    Thread safety: searches and reads run in parallel (serialised on a GPU index, which FAISS
    does not allow concurrently); add, upsert, delete, train and close run alone. One process
    per directory: a second open of the same directory raises ``StoreLockedError``.
    """

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        *,
        path: Path | None = None,
        use_gpu: bool | None = None,
        search_params: str = "",
        spec: EmbeddingSpec | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        self.dim = dim
        self.factory = factory
        self.search_params = search_params
        self.path = None if path is None else Path(path)
        self._index = FaissIndex(dim, factory, use_gpu=use_gpu, search_params=search_params)
        self._lock = RWLock()
        self._save_lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
        self._db = DocumentDatabase(
            None if self.path is None else self.path / "documents.sqlite", dim
        )
        try:
            if self.path is not None:
                self._lock_file = _lock_directory(self.path)
            self.spec = self._check_spec(spec)
            self._generation = self._init_meta()
            self._record_spec()
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
        spec: EmbeddingSpec | None = None,
    ) -> FaissStore:
        """Open the store in ``path``, creating the directory when missing.

        An existing store must have been created with the same ``dim`` and ``factory``
        (``StoreMismatchError`` otherwise) and, when it holds documents, in the same ``spec``
        (``SpecMismatchError``). Its index snapshot is loaded when it matches the committed
        documents, and rebuilt from them when it does not (writes after the last save).
        """
        return cls(dim, factory, path=path, use_gpu=use_gpu, search_params=search_params, spec=spec)

    # ----------------------------------------------------------------------------------- writes

    def add(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Store new documents; all or none: any id already stored raises ``DuplicateIdError``."""
        batch = check_batch(ids, vectors, texts, payloads, self.dim)
        if not len(batch.ids):
            return
        with self._lock.write():
            stored = [i for i in batch.ids.tolist() if i in self._index.positions]
            if stored:
                raise DuplicateIdError(
                    f"ids already stored: {preview(stored)}; use upsert() to replace them"
                )
            self._write(remove=[], batch=batch)

    def upsert(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Store documents, replacing vector, text and payload of the ids that already exist."""
        batch = check_batch(ids, vectors, texts, payloads, self.dim)
        if not len(batch.ids):
            return
        with self._lock.write():
            replaced = [i for i in batch.ids.tolist() if i in self._index.positions]
            self._write(remove=replaced, batch=batch)

    def delete(self, ids: IdsLike) -> int:
        """Delete documents; returns how many existed (missing ids are ignored)."""
        wanted = check_ids(ids)
        with self._lock.write():
            present = sorted({i for i in wanted.tolist() if i in self._index.positions})
            if present:
                self._write(remove=present, batch=None)
            return len(present)

    def delete_where(self, filter: dict[str, Any]) -> int:
        """Delete the documents whose payload matches ``filter``; returns how many."""
        tree = parse_filter(filter)
        if tree is None:
            raise FilterError(
                f"filter {filter!r} matches every document; delete the store to remove them all"
            )
        with self._lock.write():
            doomed = self._db.ids_after(-1, None, tree)
            if doomed:
                self._write(remove=doomed, batch=None)
            return len(doomed)

    def set_payload(self, id: int, payload: dict[str, Any]) -> bool:
        """Replace a document's payload, keeping its text and vector (no re-embedding)."""
        checked, encoded = check_id(id), payload_json(payload)
        with self._lock.write():
            if checked not in self._index.positions:
                return False
            # the index holds no payloads: its snapshot (and generation) stays valid
            with self._db.transaction():
                self._db.set_payload(checked, encoded)
            return True

    def train(self) -> None:
        """(Re)train the factory index on all stored vectors now and refill it.

        Use it to start an IVF/PQ index before the automatic threshold, or to retrain after the
        data drifted. Indexes without training (Flat, HNSW) are simply rebuilt.
        """
        with self._lock.write():
            ids, vectors = self._db.all_vectors()
            if not len(ids):
                raise ValueError("the store is empty: add documents before train()")
            try:
                self._index.build(ids, vectors, train=True)
            except RuntimeError as error:
                raise ValueError(
                    f"FAISS could not train {self.factory!r} on {len(ids)} stored vectors "
                    f"(about {self._index.min_train} are recommended): {error}"
                ) from None

    # ------------------------------------------------------------------------------------ reads

    def search(
        self, queries: npt.ArrayLike, top_k: int, filter: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """The ``top_k`` best documents per query row, best first.

        ``filter`` (the language of ``filters``) keeps the documents whose payload matches; a
        malformed one raises ``FilterError``. When at least ``top_k`` stored documents match,
        ``top_k`` hits are returned (see ``planning``).
        """
        q = check_vectors(queries, self.dim, "queries")
        top_k = check_top_k(top_k)
        tree = parse_filter(filter)
        with self._lock.read():
            found = planning.search(self._index, self._db, q, top_k, tree)
            docs = self._db.documents({i for hits in found for i, _ in hits})
        return [
            [Hit(i, score, docs[i].text, docs[i].payload) for i, score in hits] for hits in found
        ]

    def get(self, id: int) -> Document | None:
        """The stored document with this id, or None."""
        checked = check_id(id)
        with self._lock.read():
            return self._db.documents([checked]).get(checked)

    def get_many(self, ids: IdsLike) -> list[Document]:
        """The stored documents among ``ids``, in that order (missing ids are left out)."""
        wanted = check_ids(ids).tolist()
        with self._lock.read():
            found = self._db.documents(set(wanted))
        return [found[i] for i in wanted if i in found]

    def scan(
        self, after: int = -1, limit: int = 100, filter: dict[str, Any] | None = None
    ) -> list[Document]:
        """Up to ``limit`` documents with id > ``after`` matching ``filter``, in id order."""
        tree = parse_filter(filter)
        limit = check_batch_size(limit)
        with self._lock.read():
            ids = self._db.ids_after(after, limit, tree)
            found = self._db.documents(ids)
        return [found[i] for i in ids]

    def vectors(self, ids: IdsLike) -> npt.NDArray[np.float32]:
        """Stored vectors of ``ids`` in that order, shape (len(ids), dim); KeyError if missing."""
        wanted = check_ids(ids).tolist()
        with self._lock.read():
            found = self._db.vectors(set(wanted))
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
            with self._lock.read():
                rows = self._db.vectors_after(last, batch_size)
            if not rows:
                return
            yield from rows
            last = rows[-1][0]

    def ids(self) -> npt.NDArray[np.int64]:
        """All stored ids, ascending."""
        with self._lock.read():
            labels = self._index.labels
            return np.sort(labels[labels >= 0])

    def __len__(self) -> int:
        with self._lock.read():
            return len(self._index.positions)

    def count(self, filter: dict[str, Any] | None = None) -> int:
        """How many stored documents match ``filter`` (all of them without one)."""
        tree = parse_filter(filter)
        with self._lock.read():
            return self._db.count(tree)

    @property
    def persistent(self) -> bool:
        return self.path is not None

    @property
    def is_trained(self) -> bool:
        """False while an index that needs training waits for it (searches are exact meanwhile)."""
        return not self._index.exact_fallback

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a FAISS GPU index."""
        return self._index.on_gpu

    # ------------------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Write the index snapshot (documents are already committed); crash-safe.

        Searches continue while saving; writes wait.
        """
        if self.path is None:
            raise ValueError("this store is in memory (path=None); use FaissStore.open(path, ...)")
        with self._lock.read(), self._save_lock:
            if not self._index.dirty:
                return
            snapshot = Snapshot(
                self._index.cpu_index(),
                self._index.labels,
                self._generation,
                self._index.exact_fallback,
            )
            write_snapshot(self.path, snapshot)
            self._index.dirty = False

    def close(self) -> None:
        """Release the database and the directory.

        Unsaved index changes are not lost: the documents are committed and the next open
        rebuilds the index from them; call ``save()`` first to spare that rebuild.
        """
        with self._lock.write():
            self._release()

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --------------------------------------------------------------------------------- internals

    def _check_spec(self, spec: EmbeddingSpec | None) -> EmbeddingSpec | None:
        """The space of the stored vectors: ``spec`` once checked against the recorded one, else
        the recorded one. Runs before the dim check: a space mismatch says more than a dim."""
        recorded = self._db.meta().get("spec")
        if spec is None:
            return None if recorded is None else EmbeddingSpec.from_dict(json.loads(recorded))
        where = f"the index at {self.path}" if self.path is not None else "the index"
        stored = self._db.count()
        if recorded is not None and stored:
            check_space(
                json.loads(recorded),
                spec,
                what=where,
                hint="open it in the space it was built in, or re-embed its documents into the "
                "new one (`baihua index reembed`)",
            )
        elif stored:
            logger.warning(
                "%s predates vector-space records: taking its %d vectors to be of %s",
                where,
                stored,
                spec.summary(),
            )
        return spec

    def _record_spec(self) -> None:
        if self.spec is not None and self._db.meta().get("spec") != json.dumps(self.spec.to_dict()):
            with self._db.transaction():
                self._db.set_meta({"spec": json.dumps(self.spec.to_dict())})

    def _init_meta(self) -> int:
        """Record format, dim and factory in a new database, or check them in an existing one."""
        meta = self._db.meta()
        if not meta.keys() - {"spec"}:
            with self._db.transaction():
                self._db.set_meta(
                    {"format": FORMAT, "dim": str(self.dim), "factory": self.factory}
                    | {"generation": "0"}
                )
            return 0
        if meta.get("format") != FORMAT:
            raise StoreMismatchError(
                f"store at {self.path} has format {meta.get('format')!r}; this version reads "
                f"format {FORMAT!r}"
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
        snapshot = None if self.path is None else read_snapshot(self.path, self.dim)
        if snapshot is not None and snapshot.generation == self._generation:
            self._index.restore(snapshot.index, snapshot.labels, snapshot.exact_fallback)
            return
        ids, vectors = self._db.all_vectors()
        if snapshot is not None and not snapshot.exact_fallback:
            self._index.refill_loaded(snapshot.index, ids, vectors)  # keeps its training
        else:
            self._index.build(ids, vectors, train=len(ids) >= self._index.min_train)

    def _write(self, *, remove: Sequence[int], batch: Batch | None) -> None:
        """One write (caller holds the write lock): SQL and index change together or not at all."""
        try:
            with self._db.transaction():
                if batch is None:
                    self._db.delete(remove)
                else:
                    self._db.put(batch)  # replaces the rows of ``remove``
                self._db.set_meta({"generation": str(self._generation + 1)})
                self._index.remove(remove)
                if batch is not None:
                    self._index.add(batch.ids, batch.vectors)
                self._maintain()
        except BaseException:
            # The documents rolled back; bring the index back to them.
            self._index.refill(*self._db.all_vectors())
            raise
        self._generation += 1

    def _maintain(self) -> None:
        """Train once enough vectors are stored; refill once many positions are dead."""
        if self._index.wants_training():
            self._index.build(*self._db.all_vectors(), train=True)
        elif self._index.wants_compaction():
            self._index.refill(*self._db.all_vectors())

    def _release(self) -> None:
        self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


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
