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

import fcntl
import json
import logging
import threading
import uuid
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
from baihua.index.snapshot import (
    MANIFEST,
    Manifest,
    Snapshot,
    SnapshotDamaged,
    read_manifest,
    read_snapshot,
    write_snapshot,
)
from baihua.index.store import (
    Document,
    DuplicateIdError,
    Hit,
    IdsExhaustedError,
    IdsLike,
    StoreCorruptError,
    StoreLockedError,
    StoreMismatchError,
)
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
    preview,
)

FORMAT = "1"
DATABASE = "documents.sqlite"

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
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        self.dim = dim
        self.factory = factory
        self.search_params = search_params
        self.path = None if path is None else Path(path)
        self._index = FaissIndex(dim, factory, use_gpu=use_gpu, search_params=search_params)
        self._lock = RWLock()
        self._save_lock = threading.Lock()
        self._id_lock = threading.Lock()  # orders next_id updates; taken before the database's
        self._lock_file: IO[bytes] | None = None
        self._db_inode: int | None = None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            _refuse_missing_database(self.path)
        self._db = DocumentDatabase(None if self.path is None else self.path / DATABASE, dim)
        try:
            if self.path is not None:
                self._lock_file = lock_directory(self.path)
                self._db_inode = (self.path / DATABASE).stat().st_ino
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

    def reserve_ids(self, n: int, *, after: int = -1) -> list[int]:
        """``n`` new ids above ``after`` and above every id ever stored or reserved (deleted ones
        included), committed before they are returned; ``IdsExhaustedError`` past 2**63 - 1."""
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        with self._id_lock:
            first = max(self._next_id, after + 1)
            if first + n - 1 > MAX_ID:
                raise IdsExhaustedError(
                    f"no {n} new ids are left: ids end at 2**63 - 1 and {first - 1} is taken or "
                    "was used before; give the documents ids yourself"
                )
            with self._db.transaction():
                self._db.set_meta({"next_id": str(first + n)})
            self._next_id = first + n
        return list(range(first, first + n))

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
            self._check_database_in_place()
            snapshot = Snapshot(
                self._index.cpu_index(),
                self._index.labels,
                self._generation,
                self._index.exact_fallback,
            )
            write_snapshot(self.path, snapshot, self._store_id)
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
                f"store at {self.path} has format {meta.get('format')!r}; this version reads "
                f"format {FORMAT!r}"
            )
        if int(meta["dim"]) != self.dim or meta["factory"] != self.factory:
            raise StoreMismatchError(
                f"store at {self.path} was created with dim={meta['dim']}, "
                f"factory={meta['factory']!r}; asked for dim={self.dim}, factory={self.factory!r}. "
                "Open it with its own dim and factory, or use another directory."
            )
        self._init_ids(meta)
        return int(meta["generation"])

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
        """Load the snapshot if it matches the documents; otherwise rebuild from the documents."""
        snapshot = None if self.path is None else self._read_snapshot(self.path)
        if snapshot is not None and snapshot.generation == self._generation:
            live = int((snapshot.labels >= 0).sum())
            if live == self._db.count():
                self._index.restore(snapshot.index, snapshot.labels, snapshot.exact_fallback)
                return
            logger.warning(
                "index snapshot in %s has %d documents, the database %d; rebuilding the index "
                "from the database",
                self.path,
                live,
                self._db.count(),
            )
            snapshot = None
        ids, vectors = self._db.all_vectors()
        if snapshot is not None and not snapshot.exact_fallback:
            self._index.refill_loaded(snapshot.index, ids, vectors)  # keeps its training
        else:
            self._index.build(ids, vectors, train=len(ids) >= self._index.min_train)

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
                f"{path / DATABASE} is not the database the index snapshot in {path} "
                f"was made from (store {self._store_id}, snapshot of store {manifest.store_id}). "
                + restore
            )
        if manifest.generation > self._generation:
            raise StoreCorruptError(
                f"{path / DATABASE} is older than the index snapshot in {path} "
                f"(write generation {self._generation} < {manifest.generation}): acknowledged "
                "writes are missing from it. " + restore
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
                f"{self.path / DATABASE} was removed or replaced while the store was open; "
                "not replacing the last index snapshot. Restore the database and restart."
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
                self._db.set_meta(
                    {"generation": str(self._generation + 1), "next_id": str(next_id)}
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
            self._index.build(*self._db.all_vectors(), train=True)
        elif self._index.wants_compaction():
            self._index.refill(*self._db.all_vectors())

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
            f"{path} has an index snapshot but no {DATABASE}: the database that holds the "
            f"documents is missing. Restore {path / DATABASE} from a backup; to start over "
            f"with an empty store, move {path} away."
        )


def lock_directory(path: Path) -> IO[bytes]:
    """Take the store directory's lock (held while the returned file stays open), or raise
    StoreLockedError naming the directory."""
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
