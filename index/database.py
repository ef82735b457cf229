"""The document database: SQLite holds every document's id, text, JSON payload and vector.

It is the record an index is derived from. Writes go through ``transaction()`` so that a store can
change its index inside the same transaction and roll both back together. The ``meta`` table is a
string key -> value map that store formats extend with what they must check on open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

from baihua.core.iteration import chunked
from baihua.index import payload_index
from baihua.index.filters import Filter, Scalar
from baihua.index.store import Document
from baihua.index.validation import Batch

_SQL_CHUNK = 500  # ids per "IN (...)", well under SQLite's bound-variable limit
# Ids matching a filter, kept until the next write: at 1M documents SQLite took ~30 ms to list the
# 10,000 of a 1 % filter, per search. Up to this many filters, of up to this many ids each.
_CACHED_FILTERS = 32
_CACHED_IDS_UP_TO = 131072

ScanBlock = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]  # ids and their vectors


class DocumentDatabase:
    """One SQLite connection shared by threads; every call holds the database's own lock.

    ``path`` None keeps the database in memory.
    """

    def __init__(self, path: Path | None, dim: int) -> None:
        self.dim = dim
        self._lock = threading.RLock()
        self._matches: OrderedDict[tuple[str, str], npt.NDArray[np.int64]] = OrderedDict()
        # Explicit transactions (isolation_level=None); WAL + synchronous=FULL: a commit survives
        # a crash once it returns.
        self._db = sqlite3.connect(
            ":memory:" if path is None else path, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS documents (id INTEGER PRIMARY KEY, text TEXT NOT NULL, "
            "payload TEXT NOT NULL, vector BLOB NOT NULL)"
        )
        # Rows carry their vector, so counting or listing ids by the table reads every vector:
        # an index of the ids alone answers them (count(*) of 200k rows, cold: 0.51 s -> 7 ms).
        self._db.execute("CREATE INDEX IF NOT EXISTS documents_ids ON documents (id)")
        # One row per write: the ids it changed, as little-endian int64 (a bulk write of 10k
        # documents is one row, not 10k to insert and later delete).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS changes (generation INTEGER PRIMARY KEY, ids BLOB NOT NULL)"
        )
        self._create_payload_index()

    # ------------------------------------------------------------------------------------ meta

    def meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, entries: dict[str, str]) -> None:
        """Insert or replace meta entries; inside ``transaction()`` they commit with it."""
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", entries.items()
            )

    # ---------------------------------------------------------------------------------- writes

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together, or rolls back when the block raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._matches.clear()
                raise

    def put(self, batch: Batch) -> None:
        """Insert the batch's documents, replacing those with the same ids."""
        rows = [
            (i, text, payload, _to_blob(vector))
            for i, text, payload, vector in zip(
                batch.ids.tolist(), batch.texts, batch.payloads, batch.vectors, strict=True
            )
        ]
        fields = [
            row
            for i, payload in zip(batch.ids.tolist(), batch.payloads, strict=True)
            for row in payload_index.field_rows(i, payload)
        ]
        with self._lock:
            self._matches.clear()
            self._delete_fields(batch.ids.tolist())
            self._db.executemany(
                "INSERT OR REPLACE INTO documents (id, text, payload, vector) VALUES (?, ?, ?, ?)",
                rows,
            )
            self._db.executemany(payload_index.INSERT, fields)

    def set_payload(self, id: int, payload: str) -> None:
        """Replace one stored document's payload JSON and its payload-index rows."""
        with self._lock:
            self._matches.clear()
            self._delete_fields([id])
            self._db.execute("UPDATE documents SET payload = ? WHERE id = ?", (payload, id))
            self._db.executemany(payload_index.INSERT, payload_index.field_rows(id, payload))

    def delete(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._matches.clear()
            self._delete_fields(ids)
            for chunk in chunked(ids, _SQL_CHUNK):
                self._db.execute(f"DELETE FROM documents WHERE id IN ({_marks(chunk)})", chunk)

    def record_changes(self, generation: int, ids: Iterable[int]) -> None:
        """Journal the ids a write of ``generation`` added, replaced or deleted (inside its
        transaction), so an index snapshot of an earlier generation can catch up on them."""
        changed = np.unique(np.fromiter(ids, dtype=np.int64)).astype("<i8")
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO changes (generation, ids) VALUES (?, ?)",
                (generation, changed.tobytes()),
            )

    def forget_changes(self, up_to: int) -> None:
        """Drop the journal of generations a saved snapshot already holds."""
        with self.transaction():
            self._db.execute("DELETE FROM changes WHERE generation <= ?", (up_to,))

    # ----------------------------------------------------------------------------------- reads

    def changed_since(self, generation: int) -> list[int]:
        """The ids written or deleted after ``generation``, ascending."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ids FROM changes WHERE generation > ?", (generation,)
            ).fetchall()
        parts = [np.frombuffer(blob, dtype="<i8") for (blob,) in rows]
        return np.unique(np.concatenate(parts)).tolist() if parts else []

    def matching_ids(self, filter: Filter, limit: int = -1) -> npt.NDArray[np.int64]:
        """Ids of the documents whose payload matches, ascending; at most ``limit`` of them
        (-1: all), so a caller can learn cheaply whether only a few match."""
        sql, params = payload_index.to_sql(filter)
        key = (sql, json.dumps(params))
        with self._lock:
            cached = self._matches.get(key)
            if cached is not None:  # every match, until a write clears it
                self._matches.move_to_end(key)
                return cached if limit < 0 else cached[:limit]
            # sorted here: ORDER BY before LIMIT would read every match first
            rows = self._db.execute(f"SELECT * FROM ({sql}) LIMIT ?", [*params, limit]).fetchall()
            ids = np.array(sorted(r[0] for r in rows), dtype=np.int64)
            if limit < 0 and len(ids) <= _CACHED_IDS_UP_TO:
                ids.flags.writeable = False  # shared by every caller until the next write
                self._matches[key] = ids
                if len(self._matches) > _CACHED_FILTERS:
                    self._matches.popitem(last=False)
        return ids

    def known_matches(self, filter: Filter) -> npt.NDArray[np.int64] | None:
        """Every id matching ``filter`` when a search since the last write listed them."""
        sql, params = payload_index.to_sql(filter)
        with self._lock:
            return self._matches.get((sql, json.dumps(params)))

    def matching_among(self, filter: Filter, ids: Iterable[int]) -> set[int]:
        """Which of ``ids`` match: a look-up per id and condition, whatever the filter keeps."""
        found: set[int] = set()
        sql, params = payload_index.to_sql(filter, among="among")
        with self._lock:
            for chunk in chunked(sorted(ids), _SQL_CHUNK):
                rows = self._db.execute(
                    f"WITH among(id) AS (VALUES {', '.join(['(?)'] * len(chunk))}) "
                    f"SELECT * FROM ({sql})",
                    [*chunk, *params],
                ).fetchall()
                found.update(row[0] for row in rows)
        return found

    def count(self, filter: Filter | None = None) -> int:
        sql: str
        params: list[Scalar]
        if filter is None:
            sql, params = "SELECT id FROM documents", []
        else:
            sql, params = payload_index.to_sql(filter)
        with self._lock:
            return int(self._db.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0])

    def max_id(self) -> int | None:
        with self._lock:
            found = self._db.execute("SELECT MAX(id) FROM documents").fetchone()[0]
        return None if found is None else int(found)

    def documents(self, ids: Iterable[int]) -> dict[int, Document]:
        docs: dict[int, Document] = {}
        with self._lock:
            for chunk in chunked(sorted(ids), _SQL_CHUNK):
                rows = self._db.execute(
                    f"SELECT id, text, payload FROM documents WHERE id IN ({_marks(chunk)})", chunk
                )
                docs.update((i, Document(i, text, json.loads(p))) for i, text, p in rows)
        return docs

    def ids_after(self, last: int, limit: int | None, filter: Filter | None) -> list[int]:
        """Up to ``limit`` (None: all) ids above ``last`` whose payload matches, ascending."""
        where, params = "id > ?", list[Scalar]([last])
        if filter is not None:
            sql, filter_params = payload_index.to_sql(filter)
            where, params = f"{where} AND id IN ({sql})", [*params, *filter_params]
        query = f"SELECT id FROM documents WHERE {where} ORDER BY id"
        if limit is not None:
            query, params = f"{query} LIMIT ?", [*params, limit]
        with self._lock:
            return [row[0] for row in self._db.execute(query, params)]

    def vectors(self, ids: Iterable[int]) -> dict[int, npt.NDArray[np.float32]]:
        found: dict[int, npt.NDArray[np.float32]] = {}
        with self._lock:
            for chunk in chunked(sorted(ids), _SQL_CHUNK):
                rows = self._db.execute(
                    f"SELECT id, vector FROM documents WHERE id IN ({_marks(chunk)})", chunk
                )
                found.update((i, _from_blob(blob)) for i, blob in rows)
        return found

    def vectors_after(self, last: int, limit: int) -> list[tuple[int, npt.NDArray[np.float32]]]:
        """Up to ``limit`` (id, vector) with id > ``last``, in id order: one page of a scan."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, vector FROM documents WHERE id > ? ORDER BY id LIMIT ?", (last, limit)
            ).fetchall()
        return [(i, _from_blob(blob)) for i, blob in rows]

    def all_vectors(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Every id (ascending) and its vector, as two arrays."""
        with self._lock:
            rows = self._db.execute("SELECT id, vector FROM documents ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        blob = b"".join(r[1] for r in rows)
        return ids, np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(-1, self.dim)

    def scan(self, rows: int) -> Iterator[ScanBlock]:
        """Every stored (ids, vectors), ``rows`` at a time.

        Holds the database lock until the iteration ends: consume it at once.
        """
        with self._lock:
            cursor = self._db.execute("SELECT id, vector FROM documents")
            while chunk := cursor.fetchmany(rows):
                ids = np.array([r[0] for r in chunk], dtype=np.int64)
                yield ids, np.stack([_from_blob(r[1]) for r in chunk])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _create_payload_index(self) -> None:
        """Create the payload index; filled from the stored payloads when the database predates
        it."""
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fields'"
        ).fetchone()
        with self.transaction():
            for statement in payload_index.SCHEMA:
                self._db.execute(statement)
            if not exists:
                rows = self._db.execute("SELECT id, payload FROM documents").fetchall()
                self._db.executemany(
                    payload_index.INSERT,
                    (field for i, p in rows for field in payload_index.field_rows(i, p)),
                )

    def _delete_fields(self, ids: Sequence[int]) -> None:
        for chunk in chunked(ids, _SQL_CHUNK):
            self._db.execute(f"DELETE FROM fields WHERE doc_id IN ({_marks(chunk)})", chunk)


def read_documents(path: Path, batch_size: int, *, after: int = -1) -> Iterator[list[Document]]:
    """The documents of the database file ``path`` with ids above ``after``, in id order,
    ``batch_size`` at a time, read through a read-only connection: works while another process
    has the store open (WAL)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        last = after
        while rows := db.execute(
            "SELECT id, text, payload FROM documents WHERE id > ? ORDER BY id LIMIT ?",
            (last, batch_size),
        ).fetchall():
            yield [Document(i, text, json.loads(payload)) for i, text, payload in rows]
            last = rows[-1][0]
    finally:
        db.close()


def read_meta(path: Path) -> dict[str, str]:
    """The meta table of the database file ``path``, read without opening the store."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()


def _to_blob(vector: npt.NDArray[np.float32]) -> bytes:
    return vector.astype("<f4").tobytes()


def _from_blob(blob: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _marks(chunk: Sequence[int]) -> str:
    return ", ".join("?" * len(chunk))
