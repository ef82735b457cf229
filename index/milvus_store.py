"""Milvus: the ``Store`` of a Milvus server or cluster, or of the embedded engine (milvus-lite).

``uri`` is a local file path for the embedded engine (one process owns the file) or
``http://host:19530`` for a server. One collection holds the documents::

    id       INT64 primary key (the document id; not generated)
    vector   FLOAT_VECTOR(dim), indexed with ``index_type`` and metric IP
    text     VARCHAR (at most 65535 bytes of UTF-8)
    payload  JSON

The collection's description records the ``EmbeddingSpec`` of its vectors as JSON (the embedded
engine cannot alter collection properties; an empty collection is recreated for a new space).

Several processes may share one collection (replicas of the service on one Milvus server, Ray
workers), and Milvus has no unique constraint and no compare-and-set, so:

- **Automatic ids come from ranges a process claims** (``<collection>__id_ranges``, one row per
  claim: ``start``, ``stop``), ``_BLOCK`` ids at a time, above every claim before it. A claim is
  written, then every claim overlapping it is read back (Strong consistency); it holds only if
  it is alone. Two overlapping claims cannot both see themselves alone: each was acknowledged
  before its own read, so the later of the two reads sees the other. Losers retry above both.
  No process reads, increments and writes a shared counter; a restarted process claims a new
  range (the rest of its old one is never used: at most ``_BLOCK`` ids per start, of 2**53).
- **Explicit ids above every claim are claimed too**, before they are written, so a range
  claimed later never holds an id a caller gave.
- **Every write locks its ids** (``<collection>__locks``, one row per run of consecutive ids:
  ``start``, ``stop``, a random ``token``, ``until``) the way ranges are claimed: the lock is
  written, then every live lock overlapping it is read back; it holds only if it is alone, else
  it is withdrawn and tried again after a random pause. So in every process together, ``add``'s
  duplicate check and write are one step (the same id added twice at once: one
  ``DuplicateIdError``); upserts of one id never interleave (milvus-lite's upsert is a delete and
  then an insert, two steps: two interleaved upserts of one key left two rows, which
  ``count(*)`` counts and queries deduplicate); ``set_payload`` never brings back a document
  deleted meanwhile; ``delete_where`` deletes the matching documents as they are under the lock.
- **Ids handed out stay locked until this process writes them** (``reserve_ids`` locks them,
  skipping ids locked or stored): a write of one of them by another process waits for that
  write, then replaces it (upsert) or is refused (add). A new range starts just above the
  largest id given so far, where a caller's next ids often are: without these locks an id
  handed out and the same id given at that moment were both acknowledged, and one of the two
  documents was lost (tests/app/test_replicas.py).
- A lock older than ``_LOCK_TTL_MS`` (a minute) is a stopped writer's and ignored: one write
  must finish within it, and the writers' clocks must agree to well within it.
- **Every write is an upsert** (Milvus replaces the row of a primary key, last writer wins),
  never an insert that Milvus would keep beside an older row; the locks make it the only writer
  of its ids.
- Every read is Strong: a read in any process sees every write acknowledged before it began.

A store made before the ranges existed has a counter (``<collection>__next_id``); the first
claim starts above it and above every stored id. Filters become Milvus boolean expressions on
``payload`` (``milvus_filters.py``).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pymilvus import DataType, MilvusClient

from baihua.core.iteration import chunked
from baihua.core.spec import EmbeddingSpec
from baihua.index.base import StoreBase, check_room
from baihua.index.errors import StoreInputError, StoreMismatchError, StoreSettingError
from baihua.index.filters import Filter, parse_filter
from baihua.index.milvus_filters import to_milvus
from baihua.index.store import Document, Hit, IdsLike
from baihua.index.validation import MAX_ID, Batch, check_ids

_MAX_TEXT_BYTES = 65535  # Milvus VARCHAR limit
_ID_CHUNK = 1024  # ids per get/delete expression
_CONSISTENCY = "Strong"
_BLOCK = 1024  # automatic ids a process claims at a time
_FIELDS = ["id", "payload", "text", "vector"]
_LOCK_TTL_MS = 60_000  # a lock older than this is a stopped writer's, and ignored


class MilvusStore(StoreBase):
    """Documents (id, text, JSON payload, vector) in one Milvus collection, searched by IP.

    Parameters
    ----------
    uri : str
        A local file path (the embedded engine, milvus-lite) or ``http://host:19530``.
    dim : int
        Vector dimension; an existing collection must have it.
    collection : str
        Collection name; created when missing.
    index_type, index_params
        Milvus vector index ("FLAT", "IVF_FLAT", "HNSW", ...) and its build parameters
        ({"nlist": 1024}, {"M": 16, "efConstruction": 200}); an existing collection must have
        the same index type. The embedded engine builds FLAT, IVF_FLAT and AUTOINDEX only.
    search_params : mapping
        Milvus search parameters ({"nprobe": 16}, {"ef": 64}).
    token : str
        Credentials for a server ("user:password" or an API key); empty for none.
    spec : EmbeddingSpec or None
        The space of the vectors that will be written and searched. A collection holding
        documents refuses another (``SpecMismatchError``, listing the fields); None checks
        nothing and keeps what is recorded.
    """

    max_top_k: ClassVar[int | None] = 16384  # Milvus search limit
    max_text_bytes: ClassVar[int | None] = _MAX_TEXT_BYTES
    other_space_hint: ClassVar[str] = (
        "open it in the space it was built in, or index its documents again in a new collection"
    )

    def __init__(
        self,
        uri: str,
        dim: int,
        *,
        collection: str = "baihua",
        index_type: str = "FLAT",
        index_params: Mapping[str, Any] | None = None,
        search_params: Mapping[str, Any] | None = None,
        token: str = "",
        spec: EmbeddingSpec | None = None,
    ) -> None:
        super().__init__(dim)
        self.uri = uri
        self.collection = collection
        self.index_type = index_type.upper()
        self.index_params = dict(index_params or {})
        self.search_params = dict(search_params or {})
        self._write_lock = threading.Lock()
        self._ranges = f"{collection}__id_ranges"
        self._frontier: int | None = None  # the largest claimed stop seen; read on first use
        self._block = (0, 0)  # [next, stop): what is left of this process's claimed range
        self._locks = f"{collection}__locks"
        self._locks_open = False
        # this process's reservations not written yet: lock token -> (lock keys, ids left)
        self._reserved: dict[int, tuple[list[int], set[int]]] = {}
        self._reserved_lock = threading.Lock()
        if is_local(uri):
            if not uri.endswith(".db"):
                raise StoreSettingError(
                    "uri",
                    uri,
                    f"milvus uri {uri!r}: a local file for the embedded engine must end in .db; "
                    "a server is http://host:19530",
                )
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self._client = MilvusClient(uri=uri, token=token)
        try:
            if self._client.has_collection(collection):
                self._check_collection()
                self._client.load_collection(collection)
                self.spec = self._check_spec(spec)
                self._record_spec()
            else:
                self.spec = spec
                self._create_collection(spec)  # and loads it
        except BaseException:
            self.close()
            raise

    @property
    def persistent(self) -> bool:
        return True

    @property
    def shared(self) -> bool:
        """A server is (replicas, Ray workers); the embedded engine's file belongs to one
        process."""
        return not is_local(self.uri)

    @property
    def worker_uri(self) -> str:
        """An address other processes can write through: the server's, or for the embedded
        engine the socket of its server process (reachable on this machine only)."""
        if not is_local(self.uri):
            return self.uri
        from milvus_lite.server_manager import server_manager_instance

        socket: str | None = server_manager_instance.start_and_get_uri(self.uri)
        assert socket is not None, "the embedded engine is running while the store is open"
        return socket

    def save(self) -> None:
        """Flush the collection's growing segments to storage (writes are durable already)."""
        self._client.flush(self.collection)

    def close(self) -> None:
        """Disconnect; the embedded engine's server process for this file stops too."""
        self._client.close()
        if is_local(self.uri):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    # ---------------------------------------------------------------- writes under per-id locks

    def add(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        with self._locked_write(ids):
            super().add(ids, vectors, texts, payloads)

    def upsert(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        with self._locked_write(ids):
            super().upsert(ids, vectors, texts, payloads)

    def delete(self, ids: IdsLike) -> int:
        with self._locked(_lockable(ids)):
            return super().delete(ids)

    def delete_where(self, filter: dict[str, Any]) -> int:
        tree = parse_filter(filter)
        if tree is None:
            return super().delete_where(filter)  # refused there
        found = self._ids_after(-1, None, tree)
        with self._locked(found), self._writing():
            doomed = self._matching(found, tree)  # a write between the two reads moved it
            if doomed:
                self._remove(doomed)
        return len(doomed)

    def set_payload(self, id: int, payload: dict[str, Any]) -> bool:
        with self._locked(_lockable([id])):
            return super().set_payload(id, payload)

    # ------------------------------------------------------------------------- the engine's part

    def _writing(self) -> AbstractContextManager[Any]:
        return self._write_lock

    def _reading(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()  # Milvus serves reads during writes

    def _stored(self, ids: Sequence[int]) -> list[int]:
        found: set[int] = set()
        for chunk in chunked(ids, _ID_CHUNK):
            rows = self._client.get(self.collection, ids=chunk, output_fields=["id"])
            found.update(int(r["id"]) for r in rows)
        return sorted(found)

    def _put(self, batch: Batch, *, replace: bool) -> None:
        """An upsert either way (see the module docstring), after the ids above every claim
        are claimed."""
        with self._id_lock:
            self._cover(int(batch.ids.max()))
        self._client.upsert(self.collection, _rows(batch))

    def _remove(self, ids: Sequence[int]) -> None:
        for chunk in chunked(ids, _ID_CHUNK):
            self._client.delete(self.collection, ids=chunk)

    def _replace_payload(self, id: int, payload: str) -> bool:
        """Upserts the document with its text and vector as they are."""
        rows = self._client.get(self.collection, ids=[id], output_fields=["vector", "text"])
        if not rows:
            return False
        row = {
            "id": id,
            "vector": [float(x) for x in rows[0]["vector"]],
            "text": rows[0]["text"],
            "payload": json.loads(payload),
        }
        self._client.upsert(self.collection, [row])
        return True

    @contextmanager
    def _locked_write(self, ids: IdsLike) -> Iterator[None]:
        """``_locked`` for a write of documents, then settle the reservations it filled."""
        locked = _lockable(ids)
        try:
            with self._locked(locked):
                yield
        finally:
            self._settle_reserved(locked)

    @contextmanager
    def _locked(self, ids: Sequence[int]) -> Iterator[None]:
        """Hold the lock of ``ids`` (sorted, distinct) while the block runs: no other writer
        of one of them, in any process, holds it meanwhile. Waits for the holders (a
        reservation of another process: until its documents are written)."""
        if not ids:
            yield
            return
        for attempt in itertools.count():
            _, keys, contested = self._try_lock(ids)
            if not contested:
                break
            _back_off(attempt)
        try:
            yield
        finally:
            self._client.delete(self._locks, ids=keys)

    def _try_lock(self, ids: Sequence[int]) -> tuple[int, list[int], list[int]]:
        """Write a lock of ``ids`` (sorted, distinct), then read every live lock overlapping
        them, as ``_try_claim`` does: the lock's token and keys, and the ids another writer
        locks too (then this lock is withdrawn already). This process's reservations are not
        rivals: its writes of those ids are the ones they wait for."""
        self._open_locks()
        token = random.getrandbits(62)
        until = _now_ms() + _LOCK_TTL_MS
        rows = [
            {"start": start, "stop": stop, "token": token, "until": until, "vector": [0.0, 0.0]}
            for start, stop in _runs(ids)
        ]
        keys = [int(k) for k in self._client.insert(self._locks, rows)["ids"]]
        live = self._client.query(
            self._locks,
            filter=f"start <= {ids[-1]} and stop > {ids[0]}",
            output_fields=["key", "start", "stop", "token", "until"],
            consistency_level=_CONSISTENCY,
        )
        with self._reserved_lock:
            own = set(self._reserved)
        now, contested, stale = _now_ms(), set[int](), list[int]()
        for lock in live:
            if int(lock["until"]) < now:
                stale.append(int(lock["key"]))
            elif int(lock["token"]) not in {token, *own}:
                low = bisect.bisect_left(ids, int(lock["start"]))
                high = bisect.bisect_left(ids, int(lock["stop"]))
                contested.update(ids[low:high])
        if contested:
            stale += keys
        if stale:
            self._client.delete(self._locks, ids=stale)
        return token, keys, sorted(contested)

    def _settle_reserved(self, ids: Sequence[int]) -> None:
        """After a write of ``ids`` (done or failed): unlock this process's reservations that
        have none of their ids left to write."""
        settled = []
        with self._reserved_lock:
            for token, (keys, left) in list(self._reserved.items()):
                left.difference_update(ids)
                if not left:
                    settled += keys
                    del self._reserved[token]
        if settled:
            self._client.delete(self._locks, ids=settled)

    def _open_locks(self) -> None:
        """Create the locks' collection when missing (another process may at the same moment:
        creating one of the same schema twice is allowed)."""
        if self._locks_open:
            return
        if not self._client.has_collection(self._locks):
            schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
            schema.add_field("key", DataType.INT64, is_primary=True)
            schema.add_field("start", DataType.INT64)
            schema.add_field("stop", DataType.INT64)
            schema.add_field("token", DataType.INT64)
            schema.add_field("until", DataType.INT64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one
            index = self._client.prepare_index_params()
            index.add_index("vector", index_type="FLAT", metric_type="IP")
            self._client.create_collection(
                self._locks, schema=schema, index_params=index, consistency_level=_CONSISTENCY
            )
        self._client.load_collection(self._locks)
        self._locks_open = True

    def _matching(self, ids: Sequence[int], tree: Filter) -> list[int]:
        """Those of ``ids`` stored and matching ``tree`` now."""
        found: list[int] = []
        for chunk in chunked(ids, _ID_CHUNK):
            rows = self._client.query(
                self.collection,
                filter=f"id in {list(chunk)} and ({to_milvus(tree)})",
                output_fields=["id"],
                consistency_level=_CONSISTENCY,
            )
            found += [int(r["id"]) for r in rows]
        return sorted(found)

    def _reserve(self, n: int, first: int) -> int:
        """From this process's range, or a new one claimed above every claim; ids another
        process stored there (explicit ids given inside this range) are skipped."""
        while True:
            start, stop = self._block
            if max(start, first) + n > stop:
                start, stop = self._claim(first, max(n, _BLOCK), need=n)
            start = max(start, first)
            wanted = range(start, start + n)
            token, keys, contested = self._try_lock(wanted)
            taken = sorted({*contested, *(self._stored(wanted) if not contested else [])})
            self._block = ((taken[-1] if taken else start + n - 1) + 1, stop)
            if not taken:
                with self._reserved_lock:
                    self._reserved[token] = (keys, set(wanted))
                return start
            if not contested:
                self._client.delete(self._locks, ids=keys)

    def _cover(self, top: int) -> None:
        """Claim up to ``top`` (an id about to be written) when it is above every claim, so no
        range claimed later holds it; within this process's range, hand out only ids above it."""
        start, stop = self._block
        if start <= top < stop:
            self._block = (top + 1, stop)
        if top < self._read_frontier():
            return
        for attempt in itertools.count():
            frontier = self._read_frontier(refresh=True)
            if top < frontier or self._try_claim(frontier, top + 1):
                return
            _back_off(attempt)

    def _claim(self, first: int, size: int, *, need: int) -> tuple[int, int]:
        """Claim ``size`` ids from max(``first``, every claim's stop) on: [start, stop), held
        by this process alone; ``need`` of them must fit below 2**63 (``IdsExhaustedError``)."""
        for attempt in itertools.count():
            start = max(first, self._read_frontier(refresh=True))
            check_room(start, need)
            stop = min(start + size, MAX_ID + 1)
            if self._try_claim(start, stop):
                return start, stop
            _back_off(attempt)
        raise AssertionError("unreachable")

    def _try_claim(self, start: int, stop: int) -> bool:
        """Write the claim of [start, stop), then read every claim overlapping it: whether it
        is alone (see the module docstring for why two overlapping claims never both are)."""
        key = self._client.insert(self._ranges, [_claim_row(start, stop)])["ids"][0]
        rivals = self._client.query(
            self._ranges,
            filter=f"start < {stop} and stop > {start}",
            output_fields=["key"],
            consistency_level=_CONSISTENCY,
        )
        self._frontier = max(self._read_frontier(), stop)
        return [int(r["key"]) for r in rivals] == [int(key)]

    def _read_frontier(self, *, refresh: bool = False) -> int:
        """Above every claimed id (as last read; ``refresh`` reads the claims made since)."""
        if self._frontier is None:
            self._frontier = self._open_ranges()
            refresh = True
        if refresh:
            iterator = self._client.query_iterator(
                self._ranges,
                batch_size=4096,
                filter=f"stop > {self._frontier}",
                output_fields=["stop"],
                consistency_level=_CONSISTENCY,
            )
            try:
                while page := iterator.next():
                    self._frontier = max([self._frontier, *(int(r["stop"]) for r in page)])
            finally:
                iterator.close()
        return self._frontier

    def _open_ranges(self) -> int:
        """Create the claims' collection when missing; when it has no claim yet, claim what
        a store made before it used: up to its counter and its largest stored id."""
        if not self._client.has_collection(self._ranges):
            schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
            schema.add_field("key", DataType.INT64, is_primary=True)
            schema.add_field("start", DataType.INT64)
            schema.add_field("stop", DataType.INT64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one
            index = self._client.prepare_index_params()
            index.add_index("vector", index_type="FLAT", metric_type="IP")
            self._client.create_collection(
                self._ranges, schema=schema, index_params=index, consistency_level=_CONSISTENCY
            )
        self._client.load_collection(self._ranges)
        claimed = self._client.query(
            self._ranges, filter="", output_fields=["count(*)"], consistency_level=_CONSISTENCY
        )
        if int(claimed[0]["count(*)"]):
            return 0
        used = 0
        counter = f"{self.collection}__next_id"
        if self._client.has_collection(counter):
            self._client.load_collection(counter)
            rows = self._client.query(
                counter, ids=[0], output_fields=["next_id"], consistency_level=_CONSISTENCY
            )
            used = int(rows[0]["next_id"]) if rows else 0
        stored = self.ids()
        used = max(used, int(stored[-1]) + 1 if len(stored) else 0)
        if used:  # another process may do the same: both claims only mark those ids used
            self._client.insert(self._ranges, [_claim_row(0, used)])
        return used

    def _search(
        self, queries: npt.NDArray[np.float32], top_k: int, tree: Filter | None
    ) -> list[list[Hit]]:
        results = self._search_rows(queries, top_k, tree, ["text", "payload"])
        return [
            [
                Hit(int(r["id"]), float(r["distance"]), r["entity"]["text"], r["entity"]["payload"])
                for r in row
            ]
            for row in results
        ]

    def _search_ids(
        self, queries: npt.NDArray[np.float32], top_k: int, tree: Filter | None
    ) -> list[list[tuple[int, float]]]:
        results = self._search_rows(queries, top_k, tree, [])
        return [[(int(r["id"]), float(r["distance"])) for r in row] for row in results]

    def _search_rows(
        self,
        queries: npt.NDArray[np.float32],
        top_k: int,
        tree: Filter | None,
        output_fields: list[str],
    ) -> list[list[dict[str, Any]]]:
        """Milvus's result rows, one list per query row (Milvus leaves out trailing empty ones)."""
        results = self._client.search(
            self.collection,
            data=queries.tolist(),
            limit=top_k,
            filter="" if tree is None else to_milvus(tree),
            output_fields=output_fields,
            search_params={"metric_type": "IP", "params": self.search_params},
            anns_field="vector",
            consistency_level=_CONSISTENCY,
        )
        rows = [list(row) for row in results]
        return rows + [[] for _ in range(len(queries) - len(rows))]

    def _documents(self, ids: Collection[int]) -> dict[int, Document]:
        found: dict[int, Document] = {}
        for chunk in chunked(ids, _ID_CHUNK):
            rows = self._client.get(self.collection, ids=chunk, output_fields=["text", "payload"])
            found.update(
                (int(r["id"]), Document(int(r["id"]), r["text"], r["payload"])) for r in rows
            )
        return found

    def _vectors(self, ids: Collection[int]) -> dict[int, npt.NDArray[np.float32]]:
        found: dict[int, npt.NDArray[np.float32]] = {}
        for chunk in chunked(ids, _ID_CHUNK):
            rows = self._client.get(self.collection, ids=chunk, output_fields=["vector"])
            found.update((int(r["id"]), np.asarray(r["vector"], dtype=np.float32)) for r in rows)
        return found

    def _vectors_after(self, after: int, limit: int) -> list[tuple[int, npt.NDArray[np.float32]]]:
        """The ids first, then their vectors; a page deleted in between is skipped."""
        while ids := self._ids_after(after, limit, None):
            found = self._vectors(ids)
            if found:
                return [(i, found[i]) for i in ids if i in found]
            after = ids[-1]
        return []

    def _ids_after(self, after: int, limit: int | None, tree: Filter | None) -> list[int]:
        """Read by a query iterator: one query returns at most 16384 rows, and its pages come
        in primary-key order (its cursor is the last id)."""
        iterator = self._client.query_iterator(
            self.collection,
            batch_size=4096 if limit is None else min(limit, 4096),
            filter=f"id > {after}" + ("" if tree is None else f" and ({to_milvus(tree)})"),
            output_fields=["id"],
            consistency_level=_CONSISTENCY,
        )
        ids: list[int] = []
        try:
            while (limit is None or len(ids) < limit) and (page := iterator.next()):
                ids.extend(int(r["id"]) for r in page)
        finally:
            iterator.close()
        return sorted(ids)[:limit]

    def _count(self, tree: Filter | None) -> int:
        rows = self._client.query(
            self.collection,
            filter="" if tree is None else to_milvus(tree),
            output_fields=["count(*)"],
            consistency_level=_CONSISTENCY,
        )
        return int(rows[0]["count(*)"])

    def _where(self) -> str:
        return f"the collection {self.collection!r} at {self.uri}"

    def _recorded_spec(self) -> dict[str, Any] | None:
        description = self._client.describe_collection(self.collection).get("description", "")
        return dict(json.loads(description)) if description else None

    def _write_spec(self, spec: EmbeddingSpec) -> None:
        """The embedded engine cannot alter a collection's description: an empty collection is
        recreated in ``spec``; one holding documents (checked to be of ``spec``'s space) keeps
        its record."""
        if not self._count(None):
            self._client.drop_collection(self.collection)
            self._create_collection(spec)

    # --------------------------------------------------------------------------------- internals

    def _create_collection(self, spec: EmbeddingSpec | None) -> None:
        description = "" if spec is None else json.dumps(spec.to_dict())
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=description
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("text", DataType.VARCHAR, max_length=_MAX_TEXT_BYTES)
        schema.add_field("payload", DataType.JSON)
        index = self._client.prepare_index_params()
        index.add_index(
            "vector", index_type=self.index_type, metric_type="IP", params=self.index_params
        )
        self._client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level=_CONSISTENCY
        )

    def _check_collection(self) -> None:
        """An existing collection must be ours: the four fields, this dim and index type."""
        description = self._client.describe_collection(self.collection)
        fields = {f["name"]: f for f in description["fields"]}
        dim = fields.get("vector", {}).get("params", {}).get("dim")
        where = f"collection {self.collection!r} at {self.uri}"
        if sorted(fields) != _FIELDS or dim is None:
            raise StoreMismatchError(
                where,
                {"fields": sorted(fields)},
                {"fields": _FIELDS},
                "It is not baihua's: use another collection name.",
            )
        index_type = (self._vector_index() or {}).get("index_type")
        recorded = {"dim": int(dim), "index_type": index_type}
        if recorded != {"dim": self.dim, "index_type": self.index_type}:
            raise StoreMismatchError(
                where,
                recorded,
                {"dim": self.dim, "index_type": self.index_type},
                "Use its own dim and index type, or another collection.",
            )

    def _vector_index(self, wait_s: float = 10.0) -> dict[str, Any] | None:
        """The vector field's index description. A collection another replica is creating has
        none for a moment (Milvus makes the collection, then its index): wait for it; None
        when it never comes."""
        deadline = time.monotonic() + wait_s
        while (index := self._client.describe_index(self.collection, "vector")) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return dict(index)


def is_local(uri: str) -> bool:
    """Whether ``uri`` names a file for the embedded engine rather than a server address
    (``http://``, ``https://``, ``tcp://``, ``unix:``)."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri) is None


def _back_off(attempt: int) -> None:
    """A random pause after a lost claim, so the rivals' next claims spread out."""
    time.sleep(random.uniform(0, 0.01 * min(attempt + 1, 10)))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _runs(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted distinct ids as [start, stop) runs of consecutive ids."""
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _lockable(ids: IdsLike) -> list[int]:
    """The distinct ids of a write, sorted; none when they are invalid (the write refuses
    them before it locks anything)."""
    try:
        return sorted(set(check_ids(ids).tolist()))
    except StoreInputError:
        return []


def _claim_row(start: int, stop: int) -> dict[str, Any]:
    return {"start": start, "stop": stop, "vector": [0.0, 0.0]}


def _rows(batch: Batch) -> list[dict[str, Any]]:
    return [
        {"id": i, "vector": vector, "text": text, "payload": json.loads(payload)}
        for i, vector, text, payload in zip(
            batch.ids.tolist(), batch.vectors.tolist(), batch.texts, batch.payloads, strict=True
        )
    ]
