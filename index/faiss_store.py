"""FAISS over SQLite: the ``Store`` of one machine, persisted in one directory.

SQLite is the record (``database.py``): every document's id, text, JSON payload and float32 vector,
committed on each write. The FAISS index (``faiss_index.py``) is derived from it and can always be
rebuilt or retrained from the stored vectors; ``save()`` writes an index snapshot
(``snapshot.py``) so that the next open loads it instead of rebuilding.

Layout of a store directory::

    documents.sqlite      documents (id, text, payload, vector); meta (format, dim, factory,
                          generation, spec: the EmbeddingSpec of the vectors as JSON,
                          store_id, next_id)
    snapshot.json         names the files of the last save(), their checksums, the write
                          generation and the store_id they match
    index-<token>.faiss   the FAISS index (CPU copy)
    labels-<token>.npy    position in the index -> document id (-1: deleted or replaced)
    lock                  flock()ed while a FaissStore has the directory open

Opening checks that the files agree. A snapshot file that changed or cannot be read is repaired:
the index is rebuilt from the database, which holds every vector. A database that is missing,
older than the snapshot or another store's cannot be repaired from the snapshot (it holds no
texts or payloads): ``StoreCorruptError`` says what was found and what to do, and nothing in the
directory is changed, so the last good snapshot stays.

Ids: ``next_id`` is above every id ever stored or reserved and is committed with each write, so
``reserve_ids`` never hands out an id twice, not even a deleted one after a crash.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import numpy.typing as npt

from baihua.core.spec import EmbeddingSpec
from baihua.index import planning
from baihua.index.base import StoreBase, check_room
from baihua.index.database import DocumentDatabase
from baihua.index.errors import StoreCorruptError, StoreMismatchError, StoreSettingError
from baihua.index.faiss_index import FaissIndex
from baihua.index.filters import Filter
from baihua.index.locks import RWLock, lock_directory
from baihua.index.snapshot import (
    MANIFEST,
    Manifest,
    Snapshot,
    SnapshotDamaged,
    read_manifest,
    read_snapshot,
    write_snapshot,
)
from baihua.index.store import Document, Hit
from baihua.index.validation import MAX_ID, Batch

FORMAT = "1"
DATABASE = "documents.sqlite"
# Training aside: positions appended meanwhile are added outside the write lock in up to this many
# rounds, until fewer than _SWAP_TAIL remain; those are added under the lock, with the swap.
_CATCH_UP_ROUNDS = 8
_SWAP_TAIL = 8192

logger = logging.getLogger(__name__)


class FaissStore(StoreBase):
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
        FAISS ParameterSpace settings applied to the index, e.g. "nprobe=16" or "efSearch=128";
        left out, an HNSW index gets ``faiss_index.HNSW_DEFAULTS`` and an IVF one nprobe=1.
        Checked when the store opens (``StoreSettingError`` for a parameter the factory lacks or
        a malformed value) and applied to the index loaded then, so they may change from one
        open to the next; efConstruction shapes only the vectors added after it.
    spec : EmbeddingSpec or None
        The space of the vectors that will be written and searched. A store holding documents
        records its space and refuses another (``SpecMismatchError``, listing the fields); an empty
        store takes the new one. None checks nothing and keeps what is recorded.

    A filtered search returns ``top_k`` hits when at least ``top_k`` stored documents match
    (see ``planning``). Thread safety: searches and reads run in parallel (serialised on a GPU
    index, which FAISS does not allow concurrently); add, upsert, delete, train and close run
    alone. One process per directory: a second open of the same directory raises
    ``StoreLockedError``.
    """

    other_space_hint: ClassVar[str] = (
        "open it in the space it was built in, or re-embed its documents into the new one "
        "(`baihua index reembed`)"
    )

    _store_id: str  # names the database; snapshots record it (set by _init_meta)
    _next_id: int  # above every id ever stored or reserved

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
        super().__init__(dim)
        self.factory = factory
        self.search_params = search_params
        self.path = None if path is None else Path(path)
        self._index = FaissIndex(dim, factory, use_gpu=use_gpu, search_params=search_params)
        self._lock = RWLock()
        self._save_lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        self._db_inode: int | None = None
        self._trainer: threading.Thread | None = None
        self._closed = False
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            _refuse_missing_database(self.path)
        self._db = DocumentDatabase(None if self.path is None else self.path / DATABASE, dim)
        try:
            if self.path is not None:
                self._lock_file = lock_directory(self.path)
                self._db_inode = (self.path / DATABASE).stat().st_ino
            self.spec = self._check_spec(spec)  # before the dim check: a space says more
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

    def train(self) -> None:
        """(Re)train the factory index on all stored vectors now and refill it.

        Use it to start an IVF/PQ index before the automatic threshold, or to retrain after the
        data drifted. Indexes without training (Flat, HNSW) are simply rebuilt.
        """
        with self._lock.write():
            ids, vectors = self._db.all_vectors()
            if not len(ids):
                raise StoreSettingError(
                    "factory", self.factory, "the store is empty: add documents before train()"
                )
            try:
                self._index.build(ids, vectors, train=True)
            except RuntimeError as error:
                raise StoreSettingError(
                    "factory",
                    self.factory,
                    f"FAISS could not train {self.factory!r} on {len(ids)} stored vectors "
                    f"(about {self._index.min_train} are recommended): {error}",
                ) from None

    def wait_trained(self, timeout: float | None = None) -> bool:
        """Wait for a training in progress (see ``is_trained``); whether the index is trained."""
        trainer = self._trainer
        if trainer is not None:
            trainer.join(timeout)
        return self.is_trained

    def ids(self, filter: dict[str, Any] | None = None) -> npt.NDArray[np.int64]:
        """The stored ids whose payload matches ``filter``, ascending; all of them are read from
        the index's labels."""
        if filter is not None:
            return super().ids(filter)
        with self._lock.read():
            labels = self._index.labels
            return np.sort(labels[labels >= 0])

    def __len__(self) -> int:
        with self._lock.read():
            return len(self._index.positions)

    @property
    def persistent(self) -> bool:
        return self.path is not None

    @property
    def shared(self) -> bool:
        """One process owns the store (its directory lock)."""
        return False

    @property
    def is_trained(self) -> bool:
        """False while an index that needs training waits for it (searches are exact meanwhile).

        The first training starts on its own once enough vectors are stored, in a thread: its
        k-means runs without the write lock, so searches and writes go on (``wait_trained``)."""
        return not self._index.exact_fallback

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a FAISS GPU index."""
        return self._index.on_gpu

    # ------------------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Write the index snapshot (documents are already committed); crash-safe.

        The index is cloned in memory under the read lock, then written, fsynced and hashed
        without it: a write that arrives meanwhile (and every search queued behind it) waits
        for the clone, not for the disk. The price is one transient copy of the index.
        """
        if self.path is None:
            raise StoreSettingError(
                "path", None, "this store is in memory (path=None); use FaissStore.open(path, ...)"
            )
        with self._save_lock:
            with self._lock.read():
                if not self._index.dirty:
                    return
                self._check_database_in_place()
                snapshot = Snapshot(
                    self._index.cpu_copy(),
                    self._index.labels.copy(),
                    self._generation,
                    self._index.exact_fallback,
                )
                self._index.dirty = False
            try:
                write_snapshot(self.path, snapshot, self._store_id)
            except BaseException:
                self._index.dirty = True  # the changes are still to be saved
                raise
            try:
                self._db.forget_changes(snapshot.generation)
            except sqlite3.Error as error:  # a longer journal is only replayed, never wrong
                logger.warning("change journal in %s not trimmed: %s", self.path, error)

    def close(self) -> None:
        """Release the database and the directory.

        Unsaved index changes are not lost: the documents are committed and the next open
        rebuilds the index from them; call ``save()`` first to spare that rebuild.
        """
        with self._save_lock, self._lock.write():
            self._closed = True  # a training aside still running is dropped
            self._release()

    # ------------------------------------------------------------------------- the engine's part

    def _writing(self) -> AbstractContextManager[None]:
        return self._lock.write()

    def _reading(self) -> AbstractContextManager[None]:
        return self._lock.read()

    def _payload_writing(self) -> AbstractContextManager[None]:
        """The read side: a payload is a row of the database (which serialises its own
        transactions), never part of the index, so a payload write need not wait for a snapshot's
        clone of the index (HNSW32 1M x 128: ~1 s), nor make searches queue behind it."""
        return self._lock.read()

    def _stored(self, ids: Sequence[int]) -> list[int]:
        wanted = np.asarray(ids, dtype=np.int64)
        return sorted(wanted[self._index.positions.find(wanted) >= 0].tolist())

    def _put(self, batch: Batch, *, replace: bool) -> None:
        self._write(remove=self._stored(batch.ids.tolist()) if replace else [], batch=batch)

    def _remove(self, ids: Sequence[int]) -> None:
        self._write(remove=ids, batch=None)

    def _replace_payload(self, id: int, payload: str) -> bool:
        """Under the read lock (``_payload_writing``): deletes, which take the write lock,
        cannot interleave."""
        if id not in self._index.positions:
            return False
        # the index holds no payloads: its snapshot (and generation) stays valid
        with self._db.transaction():
            self._db.set_payload(id, payload)
        return True

    def _reserve(self, n: int, first: int) -> int:
        """From the counter in the database: one process owns the store."""
        first = max(self._next_id, first)
        check_room(first, n)
        with self._db.transaction():
            self._db.set_meta({"next_id": str(first + n)})
        self._next_id = first + n
        return first

    def _search(
        self, queries: npt.NDArray[np.float32], top_k: int, tree: Filter | None
    ) -> list[list[Hit]]:
        found = self._search_ids(queries, top_k, tree)
        docs = self._db.documents({i for hits in found for i, _ in hits})
        return [
            [Hit(i, score, docs[i].text, docs[i].payload) for i, score in hits] for hits in found
        ]

    def _search_ids(
        self, queries: npt.NDArray[np.float32], top_k: int, tree: Filter | None
    ) -> list[list[tuple[int, float]]]:
        return planning.search(self._index, self._db, queries, top_k, tree)

    def _documents(self, ids: Collection[int]) -> dict[int, Document]:
        return self._db.documents(ids)

    def _vectors(self, ids: Collection[int]) -> dict[int, npt.NDArray[np.float32]]:
        return self._db.vectors(ids)

    def _vectors_after(self, after: int, limit: int) -> list[tuple[int, npt.NDArray[np.float32]]]:
        return self._db.vectors_after(after, limit)

    def _ids_after(self, after: int, limit: int | None, tree: Filter | None) -> list[int]:
        return self._db.ids_after(after, limit, tree)

    def _count(self, tree: Filter | None) -> int:
        return self._db.count(tree)

    def _where(self) -> str:
        return f"the index at {self.path}" if self.path is not None else "the index"

    def _recorded_spec(self) -> dict[str, Any] | None:
        recorded = self._db.meta().get("spec")
        return None if recorded is None else dict(json.loads(recorded))

    def _write_spec(self, spec: EmbeddingSpec) -> None:
        with self._db.transaction():
            self._db.set_meta({"spec": json.dumps(spec.to_dict())})

    # --------------------------------------------------------------------------------- internals

    def _init_meta(self) -> int:
        """Record format, dim and factory in a new database, or check them in an existing one;
        store_id and next_id are added to databases made before they existed."""
        meta = self._db.meta()
        if not meta.keys() - {"spec"}:
            meta = meta | {"format": FORMAT, "dim": str(self.dim), "factory": self.factory}
            meta |= {"generation": "0", "store_id": uuid.uuid4().hex, "next_id": "0"}
            with self._db.transaction():
                self._db.set_meta(meta)
        if meta.get("format") != FORMAT:
            raise StoreMismatchError(
                f"store at {self.path}",
                {"format": meta.get("format")},
                {"format": FORMAT},
                "This version reads only its own format: use another directory.",
            )
        recorded = {"dim": int(meta["dim"]), "factory": meta["factory"]}
        if recorded != {"dim": self.dim, "factory": self.factory}:
            raise StoreMismatchError(
                f"store at {self.path}",
                recorded,
                {"dim": self.dim, "factory": self.factory},
                "Open it with its own dim and factory, or use another directory.",
            )
        self._init_ids(meta)
        self._init_journal(meta)
        return int(meta["generation"])

    def _init_journal(self, meta: dict[str, str]) -> None:
        """The change journal holds every write from generation ``changes_from`` on while
        ``changes_to`` equals the generation; a database without one, or last written by a
        version that kept none, starts it now."""
        generation = meta["generation"]
        if meta.get("changes_to") != generation:
            with self._db.transaction():
                self._db.set_meta({"changes_from": generation, "changes_to": generation})
            meta = meta | {"changes_from": generation}
        self._changes_from = int(meta["changes_from"])

    def _init_ids(self, meta: dict[str, str]) -> None:
        added = {}
        if "store_id" not in meta:
            added["store_id"] = uuid.uuid4().hex
        if "next_id" not in meta:
            largest = self._db.max_id()
            added["next_id"] = str(0 if largest is None else largest + 1)
        if added:
            with self._db.transaction():
                self._db.set_meta(added)
        meta = meta | added
        self._store_id = meta["store_id"]
        self._next_id = int(meta["next_id"])

    def _load_index(self) -> None:
        """Load the snapshot and catch it up on the writes journaled after it (a crash or a
        close without save leaves it behind); rebuild from the documents when it is missing,
        damaged, older than the journal or does not add up to the documents."""
        snapshot = None if self.path is None else self._read_snapshot(self.path)
        if snapshot is not None and snapshot.generation >= self._changes_from:
            self._index.restore(snapshot.index, snapshot.labels, snapshot.exact_fallback)
            changed = self._catch_up(snapshot.generation)
            live, stored = len(self._index.positions), self._db.count()
            if live == stored:
                if changed:
                    logger.info(
                        "index snapshot in %s caught up on %d documents written after it",
                        self.path,
                        changed,
                    )
                    self._maintain()
                return
            logger.warning(
                "index snapshot in %s has %d documents, the database %d; rebuilding the index "
                "from the database",
                self.path,
                live,
                stored,
            )
            snapshot = None
        ids, vectors = self._db.all_vectors()
        if snapshot is not None and not snapshot.exact_fallback:
            self._index.refill_loaded(snapshot.index, ids, vectors)  # keeps its training
        else:
            self._index.build(ids, vectors, train=len(ids) >= self._index.min_train)

    def _catch_up(self, generation: int) -> int:
        """Apply to the loaded index the documents written or deleted after ``generation``;
        how many ids changed."""
        if generation == self._generation:
            return 0
        changed = self._db.changed_since(generation)
        self._index.remove(self._stored(changed))
        stored = self._db.vectors(changed)
        if stored:
            ids = np.array(sorted(stored), dtype=np.int64)
            self._index.add(ids, np.stack([stored[i] for i in ids.tolist()]))
        return len(changed)

    def _read_snapshot(self, path: Path) -> Snapshot | None:
        """The snapshot when its files are intact; None to rebuild; raises when the database is
        the part that is wrong."""
        manifest = read_manifest(path)
        if manifest is None:
            return None
        self._check_database_agrees(manifest)
        try:
            return read_snapshot(path, manifest, self.dim)
        except SnapshotDamaged as error:
            logger.warning(
                "index snapshot in %s is damaged (%s); rebuilding the index from %s, which holds "
                "every vector",
                path,
                error,
                DATABASE,
            )
            return None

    def _check_database_agrees(self, manifest: Manifest) -> None:
        """Refuse a database that another store made, or one older than the snapshot."""
        path = self.path
        assert path is not None
        restore = (
            f"Restore the matching {DATABASE} from a backup; or, to serve this database as it "
            f"is, delete {path / MANIFEST} (the index is then rebuilt from the database)."
        )
        if manifest.store_id is not None and manifest.store_id != self._store_id:
            raise StoreCorruptError(
                path,
                f"{path / DATABASE} is not the database the index snapshot in {path} "
                f"was made from (store {self._store_id}, snapshot of store {manifest.store_id}). "
                + restore,
            )
        if manifest.generation > self._generation:
            raise StoreCorruptError(
                path,
                f"{path / DATABASE} is older than the index snapshot in {path} "
                f"(write generation {self._generation} < {manifest.generation}): acknowledged "
                "writes are missing from it. " + restore,
            )

    def _check_database_in_place(self) -> None:
        """Before a snapshot replaces the last one: the database file is still the one open."""
        assert self.path is not None
        try:
            inode: int | None = (self.path / DATABASE).stat().st_ino
        except FileNotFoundError:
            inode = None
        if inode != self._db_inode:
            raise StoreCorruptError(
                self.path,
                f"{self.path / DATABASE} was removed or replaced while the store was open; "
                "not replacing the last index snapshot. Restore the database and restart.",
            )

    def _write(self, *, remove: Sequence[int], batch: Batch | None) -> None:
        """One write (caller holds the write lock): SQL and index change together or not at all;
        next_id moves above the written ids in the same transaction."""
        with self._id_lock:
            next_id = self._next_id
            if batch is not None and len(batch.ids):
                next_id = max(next_id, min(int(batch.ids.max()) + 1, MAX_ID + 1))
            self._write_locked(remove, batch, next_id)
            self._next_id = next_id

    def _write_locked(self, remove: Sequence[int], batch: Batch | None, next_id: int) -> None:
        try:
            with self._db.transaction():
                if batch is None:
                    self._db.delete(remove)
                else:
                    self._db.put(batch)  # replaces the rows of ``remove``
                written = [] if batch is None else batch.ids.tolist()
                self._db.record_changes(self._generation + 1, [*remove, *written])
                self._db.set_meta(
                    {
                        "generation": str(self._generation + 1),
                        "changes_to": str(self._generation + 1),
                        "next_id": str(next_id),
                    }
                )
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
            self._start_training()
        elif self._index.wants_compaction():
            self._index.refill(*self._db.all_vectors())

    def _start_training(self) -> None:
        """Train in a thread unless one is at it (caller holds the write lock)."""
        if self._trainer is not None and self._trainer.is_alive():
            return
        self._trainer = threading.Thread(target=self._train_aside, name="faiss-train", daemon=True)
        self._trainer.start()

    def _train_aside(self) -> None:
        """Train a new factory index on the exact fallback's vectors and fill it outside the
        write lock (k-means of IVF1024,PQ32 on 40k vectors: tens of seconds that every search
        and write used to wait for), then add the last positions and swap it in under the lock."""
        try:
            with self._lock.read():
                refills, vectors = self._index.fallback_vectors(0)
            index = self._index.trained_aside(vectors)
            index.add(vectors)
            done = len(vectors)
            for _ in range(_CATCH_UP_ROUNDS):
                with self._lock.read():
                    now, tail = self._index.fallback_vectors(done)
                if now != refills or len(tail) < _SWAP_TAIL:
                    break
                index.add(tail)
                done += len(tail)
            with self._lock.write():
                if self._closed:
                    return
                now, tail = self._index.fallback_vectors(done)
                if now == refills and len(tail):
                    index.add(tail)
                if self._index.swap_trained(index, refills):
                    logger.info("%s trained on %d vectors", self.factory, len(vectors))
        except RuntimeError as error:  # FAISS; the exact fallback keeps serving
            logger.warning("training %s failed (%s); searches stay exact", self.factory, error)

    def _release(self) -> None:
        self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _refuse_missing_database(path: Path) -> None:
    """A snapshot without its database: starting empty would serve nothing and, on the next
    save, delete the last index of the lost documents."""
    if (path / MANIFEST).exists() and not (path / DATABASE).exists():
        raise StoreCorruptError(
            path,
            f"{path} has an index snapshot but no {DATABASE}: the database that holds the "
            f"documents is missing. Restore {path / DATABASE} from a backup; to start over "
            f"with an empty store, move {path} away.",
        )
