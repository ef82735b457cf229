"""Milvus: the ``Store`` of a Milvus server or cluster, or of the embedded engine (milvus-lite).

``uri`` is a local file path for the embedded engine (one process owns the file) or
``http://host:19530`` for a server. One collection holds the documents::

    id       INT64 primary key (the document id; not generated)
    vector   FLOAT_VECTOR(dim), indexed with ``index_type`` and metric IP
    text     VARCHAR (at most 65535 bytes of UTF-8)
    payload  JSON

The collection's description records the ``EmbeddingSpec`` of its vectors as JSON (the embedded
engine cannot alter collection properties; an empty collection is recreated for a new space).
A second collection, ``<collection>__next_id``, holds one row: the id counter of ``reserve_ids``,
above every id ever stored or reserved, so a deleted id is not handed out again after a restart.
Reads use Strong consistency, so a search sees every write acknowledged before it. Filters
become Milvus boolean expressions on ``payload`` (``milvus_filters.py``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from pymilvus import DataType, MilvusClient

from baihua.core.spec import EmbeddingSpec, check_space
from baihua.index.filters import FilterError, parse_filter
from baihua.index.milvus_filters import to_milvus
from baihua.index.store import (
    Document,
    DuplicateIdError,
    Hit,
    IdsExhaustedError,
    IdsLike,
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

MAX_TEXT_BYTES = 65535  # Milvus VARCHAR limit
MAX_TOP_K = 16384  # Milvus search limit
_ID_CHUNK = 1024  # ids per get/delete expression
_CONSISTENCY = "Strong"

logger = logging.getLogger(__name__)


class MilvusStore:
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
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        self.dim = dim
        self.uri = uri
        self.collection = collection
        self.index_type = index_type.upper()
        self.index_params = dict(index_params or {})
        self.search_params = dict(search_params or {})
        self._write_lock = threading.Lock()  # makes add's duplicate check and insert one step
        self._next_id: int | None = None  # reserve_ids' counter, read on first use
        self._counter = f"{collection}__next_id"
        if is_local(uri):
            if not uri.endswith(".db"):
                raise ValueError(
                    f"milvus uri {uri!r}: a local file for the embedded engine must end in .db; "
                    "a server is http://host:19530"
                )
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self._client = MilvusClient(uri=uri, token=token)
        try:
            if self._client.has_collection(collection):
                self._check_collection()
                self._client.load_collection(collection)
                self.spec = self._check_spec(spec)
            else:
                self.spec = spec
                self._create_collection()  # and loads it
        except BaseException:
            self.close()
            raise

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
        with self._write_lock:
            stored = sorted(self._existing(batch.ids.tolist()))
            if stored:
                raise DuplicateIdError(
                    f"ids already stored: {preview(stored)}; use upsert() to replace them"
                )
            self._client.insert(self.collection, _rows(batch))
            self._count_ids(batch)

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
        with self._write_lock:
            self._client.upsert(self.collection, _rows(batch))
            self._count_ids(batch)

    def reserve_ids(self, n: int, *, after: int = -1) -> list[int]:
        """``n`` new ids above ``after`` and above every id ever stored or reserved (deleted
        ones too, across restarts): the counter is written before the ids are returned."""
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        with self._write_lock:
            first = max(self._read_counter(), after + 1)
            if first + n - 1 > 2**63 - 1:
                raise IdsExhaustedError(
                    f"no {n} new ids are left: ids end at 2**63 - 1 and {first - 1} is taken; "
                    "give the documents ids yourself"
                )
            self._write_counter(first + n)
        return list(range(first, first + n))

    def delete(self, ids: IdsLike) -> int:
        """Delete documents; returns how many existed (missing ids are ignored)."""
        wanted = sorted(set(check_ids(ids).tolist()))
        with self._write_lock:
            present = sorted(self._existing(wanted))
            for chunk in _chunks(present):
                self._client.delete(self.collection, ids=chunk)
        return len(present)

    def delete_where(self, filter: dict[str, Any]) -> int:
        """Delete the documents whose payload matches ``filter``; returns how many. The matching
        ids are listed, then deleted by id, so the count is exact."""
        tree = parse_filter(filter)
        if tree is None:
            raise FilterError(
                f"filter {filter!r} matches every document; delete the store to remove them all"
            )
        with self._write_lock:
            doomed = self._matching_ids(to_milvus(tree))
            for chunk in _chunks(doomed):
                self._client.delete(self.collection, ids=chunk)
        return len(doomed)

    def set_payload(self, id: int, payload: dict[str, Any]) -> bool:
        """Replace a document's payload, keeping its text and vector (upserted as they are)."""
        checked, encoded = check_id(id), payload_json(payload)
        with self._write_lock:
            rows = self._client.get(
                self.collection, ids=[checked], output_fields=["vector", "text"]
            )
            if not rows:
                return False
            row = {
                "id": checked,
                "vector": [float(x) for x in rows[0]["vector"]],
                "text": rows[0]["text"],
                "payload": json.loads(encoded),
            }
            self._client.upsert(self.collection, [row])
        return True

    # ------------------------------------------------------------------------------------ reads

    def search(
        self, queries: npt.ArrayLike, top_k: int, filter: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """The ``top_k`` best documents per query row, best first; ``filter`` as in
        ``index.filters`` (``FilterError`` when malformed)."""
        q = check_vectors(queries, self.dim, "queries")
        top_k = check_top_k(top_k)
        if top_k > MAX_TOP_K:
            raise ValueError(f"top_k must be at most {MAX_TOP_K} with Milvus; got {top_k}")
        tree = parse_filter(filter)
        if not len(q):
            return []
        results = self._client.search(
            self.collection,
            data=q.tolist(),
            limit=top_k,
            filter="" if tree is None else to_milvus(tree),
            output_fields=["text", "payload"],
            search_params={"metric_type": "IP", "params": self.search_params},
            anns_field="vector",
            consistency_level=_CONSISTENCY,
        )
        hits = [
            [
                Hit(int(r["id"]), float(r["distance"]), r["entity"]["text"], r["entity"]["payload"])
                for r in row
            ]
            for row in results
        ]
        return hits + [[] for _ in range(len(q) - len(hits))]

    def get(self, id: int) -> Document | None:
        """The stored document with this id, or None."""
        rows = self._client.get(
            self.collection, ids=[check_id(id)], output_fields=["text", "payload"]
        )
        if not rows:
            return None
        return Document(int(rows[0]["id"]), rows[0]["text"], rows[0]["payload"])

    def get_many(self, ids: IdsLike) -> list[Document]:
        """The stored documents among ``ids``, in that order (missing ids are left out)."""
        wanted = check_ids(ids).tolist()
        found: dict[int, Document] = {}
        for chunk in _chunks(sorted(set(wanted))):
            rows = self._client.get(self.collection, ids=chunk, output_fields=["text", "payload"])
            found.update(
                (int(r["id"]), Document(int(r["id"]), r["text"], r["payload"])) for r in rows
            )
        return [found[i] for i in wanted if i in found]

    def scan(
        self, after: int = -1, limit: int = 100, filter: dict[str, Any] | None = None
    ) -> list[Document]:
        """Up to ``limit`` documents with id > ``after`` matching ``filter``, in id order."""
        tree = parse_filter(filter)
        limit = check_batch_size(limit)
        after = max(int(after), -1)
        expression = f"id > {after}" + ("" if tree is None else f" and ({to_milvus(tree)})")
        return self.get_many(self._matching_ids(expression, limit))

    def vectors(self, ids: IdsLike) -> npt.NDArray[np.float32]:
        """Stored vectors of ``ids`` in that order, shape (len(ids), dim); KeyError if missing."""
        wanted = check_ids(ids).tolist()
        found = self._vectors(sorted(set(wanted)))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"ids not stored: {preview(missing)}")
        if not wanted:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([found[i] for i in wanted])

    def iter_vectors(self, batch_size: int = 1024) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """Every stored (id, vector) in id order, read in batches (ids listed first)."""
        batch_size = check_batch_size(batch_size)
        ids = self.ids().tolist()
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            found = self._vectors(chunk)
            yield from ((i, found[i]) for i in chunk if i in found)

    def ids(self) -> npt.NDArray[np.int64]:
        """All stored ids, ascending."""
        return np.array(self._matching_ids(""), dtype=np.int64)

    def __len__(self) -> int:
        return self.count()

    def count(self, filter: dict[str, Any] | None = None) -> int:
        """How many stored documents match ``filter`` (all of them without one)."""
        tree = parse_filter(filter)
        rows = self._client.query(
            self.collection,
            filter="" if tree is None else to_milvus(tree),
            output_fields=["count(*)"],
            consistency_level=_CONSISTENCY,
        )
        return int(rows[0]["count(*)"])

    @property
    def persistent(self) -> bool:
        return True

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

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --------------------------------------------------------------------------------- internals

    def _create_collection(self) -> None:
        description = "" if self.spec is None else json.dumps(self.spec.to_dict())
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=description
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
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
        if set(fields) != {"id", "vector", "text", "payload"} or dim is None:
            raise StoreMismatchError(
                f"collection {self.collection!r} at {self.uri} has fields {sorted(fields)}, not "
                "baihua's id, vector, text, payload; use another collection name"
            )
        index_type = self._client.describe_index(self.collection, "vector").get("index_type")
        if int(dim) != self.dim or index_type != self.index_type:
            raise StoreMismatchError(
                f"collection {self.collection!r} at {self.uri} was created with dim={dim}, "
                f"index_type={index_type!r}; asked for dim={self.dim}, "
                f"index_type={self.index_type!r}. Use its own dim and index type, or another "
                "collection."
            )

    def _check_spec(self, spec: EmbeddingSpec | None) -> EmbeddingSpec | None:
        """The space of the stored vectors: ``spec`` once checked against the recorded one, else
        the recorded one. An empty collection in another space is recreated in ``spec``'s."""
        description = self._client.describe_collection(self.collection).get("description", "")
        recorded = json.loads(description) if description else None
        if spec is None:
            return None if recorded is None else EmbeddingSpec.from_dict(recorded)
        if recorded == spec.to_dict():
            return spec
        where = f"the collection {self.collection!r} at {self.uri}"
        stored = self.count()
        if recorded is not None and stored:
            check_space(
                recorded,
                spec,
                what=where,
                hint="open it in the space it was built in, or index its documents again in a "
                "new collection",
            )
        elif stored:
            logger.warning(
                "%s has no vector-space record: taking its %d vectors to be of %s",
                where,
                stored,
                spec.summary(),
            )
        else:
            self._client.drop_collection(self.collection)
            self.spec = spec
            self._create_collection()
        return spec

    def _check_batch(
        self,
        ids: IdsLike,
        vectors: npt.ArrayLike,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any] | None] | None,
    ) -> Batch:
        batch = check_batch(ids, vectors, texts, payloads, self.dim)
        long = [i for i, t in enumerate(batch.texts) if len(t.encode()) > MAX_TEXT_BYTES]
        if long:
            raise ValueError(
                f"texts longer than {MAX_TEXT_BYTES} bytes of UTF-8 (Milvus's limit) at "
                f"positions {preview(long)}"
            )
        return batch

    def _count_ids(self, batch: Batch) -> None:
        """Keep reserve_ids' counter above ids written by the caller (write lock held)."""
        top = int(batch.ids.max()) + 1
        if top > self._read_counter():
            self._write_counter(top)

    def _read_counter(self) -> int:
        """The persisted counter, or for a store without one the largest stored id + 1."""
        if self._next_id is None:
            if not self._client.has_collection(self._counter):
                schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("id", DataType.INT64, is_primary=True)
                schema.add_field("next_id", DataType.INT64)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one
                index = self._client.prepare_index_params()
                index.add_index("vector", index_type="FLAT", metric_type="IP")
                self._client.create_collection(
                    self._counter, schema=schema, index_params=index,
                    consistency_level=_CONSISTENCY,
                )  # fmt: skip
            self._client.load_collection(self._counter)
            rows = self._client.query(
                self._counter, ids=[0], output_fields=["next_id"], consistency_level=_CONSISTENCY
            )
            stored = self.ids()
            self._next_id = max(
                int(rows[0]["next_id"]) if rows else 0, int(stored[-1]) + 1 if len(stored) else 0
            )
        return self._next_id

    def _write_counter(self, next_id: int) -> None:
        self._client.upsert(self._counter, [{"id": 0, "next_id": next_id, "vector": [0.0, 0.0]}])
        self._next_id = next_id

    def _existing(self, ids: Sequence[int]) -> set[int]:
        found: set[int] = set()
        for chunk in _chunks(ids):
            rows = self._client.get(self.collection, ids=chunk, output_fields=["id"])
            found.update(int(r["id"]) for r in rows)
        return found

    def _matching_ids(self, expression: str, limit: int | None = None) -> list[int]:
        """The smallest ``limit`` (None: all) ids of the documents matching a Milvus boolean
        expression ("" for all), ascending. A query iterator reads them: one query returns at
        most 16384 rows, and its pages come in primary-key order (its cursor is the last id)."""
        iterator = self._client.query_iterator(
            self.collection,
            batch_size=4096 if limit is None else min(limit, 4096),
            filter=expression,
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

    def _vectors(self, ids: Sequence[int]) -> dict[int, npt.NDArray[np.float32]]:
        found: dict[int, npt.NDArray[np.float32]] = {}
        for chunk in _chunks(ids):
            rows = self._client.get(self.collection, ids=chunk, output_fields=["vector"])
            found.update((int(r["id"]), np.asarray(r["vector"], dtype=np.float32)) for r in rows)
        return found


def is_local(uri: str) -> bool:
    """Whether ``uri`` names a file for the embedded engine rather than a server address
    (``http://``, ``https://``, ``tcp://``, ``unix:``)."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri) is None


def _rows(batch: Batch) -> list[dict[str, Any]]:
    return [
        {"id": i, "vector": vector, "text": text, "payload": json.loads(payload)}
        for i, vector, text, payload in zip(
            batch.ids.tolist(), batch.vectors.tolist(), batch.texts, batch.payloads, strict=True
        )
    ]


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _ID_CHUNK):
        yield list(ids[start : start + _ID_CHUNK])
