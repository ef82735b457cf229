"""Documents in the vector store: embedded through the batcher, with ids assigned when omitted.

The store is thread-safe (searches in parallel, writes alone) and commits every write to its
database before returning, so an acknowledged write survives a crash; its `save()` only writes an
index snapshot that spares a rebuild on the next start, which the server does on shutdown.
Every write marks the geodesic graph stale; it is rebuilt in the background (index/geodesic.py).

Beside a FAISS store, a BM25 index (index/sparse.py) is written by every write, after the store
and under one lock, so it sees the writes in the store's order; a crash between the two is
caught on the next start (its content digest no longer matches the stored texts) and it is
rebuilt. `search` runs in one of three modes: "dense" (the vector store), "sparse" (BM25) and
"hybrid" (both, each over the documents the filter keeps, fused by index/fusion.py).

A write the disk refuses (full, read-only, gone) raises a ``StorageError`` naming the data
directory (serving/storage.py); reads do not need the disk to take writes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from baihua.core.errors import BaihuaError
from baihua.index import Document, GeodesicReranker, Hit, Store
from baihua.index.fusion import Fusion, fuse
from baihua.index.sparse import SparseIndex
from baihua.serving.batcher import EmbedOptions, MicroBatcher
from baihua.serving.storage import DataDirectory, storage_errors

PASSAGE = EmbedOptions(text_type="passage")
QUERY = EmbedOptions(text_type="query")
T = TypeVar("T")


@dataclass
class Written:
    ids: list[int]
    truncated: list[bool]


@dataclass(frozen=True)
class RankedHit:
    """A hit of a sparse or hybrid search: ``score`` is BM25's (sparse) or the fused score
    (hybrid); each side's 1-based rank and score are None when that side did not return it."""

    id: int
    score: float
    text: str
    payload: dict[str, Any]
    dense_rank: int | None
    dense_score: float | None
    sparse_rank: int | None
    sparse_score: float | None


@dataclass
class Found:
    hits: list[list[Hit]] | list[list[RankedHit]]
    truncated: list[bool]


Mode = Literal["dense", "sparse", "hybrid"]
HYBRID_DEPTH = 50  # candidates each side gives the fusion, at least (top_k when larger)


class SparseUnavailableError(BaihuaError, ValueError):
    """Sparse or hybrid search asked of a store without a BM25 index (Milvus)."""


class NoIdLeftError(BaihuaError):
    """Ids to assign would pass the largest id allowed."""


class RerankUnavailable(BaihuaError):
    """`rerank` asks for what this store cannot do: the geodesic graph lives in one process,
    and other processes write to a shared store (a Milvus server) without it seeing."""


class DocumentIndex:
    """Add, get, delete and search documents; blocking store calls run off the event loop."""

    max_id = 2**53 - 1  # JSON clients (JavaScript) keep integers exact up to here

    def __init__(
        self,
        store: Store,
        batcher: MicroBatcher,
        reranker: GeodesicReranker,
        sparse: SparseIndex | None = None,
        directory: DataDirectory | None = None,
    ) -> None:
        """``directory``: where the store keeps its files (None: in memory or on a server),
        checked around every write."""
        self.store = store
        self.batcher = batcher
        self.reranker = reranker
        self.sparse = sparse
        self.directory = directory
        self._writes = threading.Lock()  # store and sparse index change in one order

    async def add(
        self,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any]],
        ids: Sequence[int | None],
        *,
        upsert: bool = False,
        client: str | None = None,
        arrived: float | None = None,
    ) -> Written:
        """Embed the texts as passages and store them; `None` ids get new ones.

        Raises `index.DuplicateIdError` when an id exists and `upsert` is false. `client` names
        the sender for its share of the encoder queue; `arrived` is when the request arrived,
        which the encoder's deadline counts from (as in `MicroBatcher.embed`).
        """
        embedded = await self.batcher.embed(texts, PASSAGE, client=client, arrived=arrived)
        assigned = await asyncio.to_thread(
            self._on_disk, self._write, ids, embedded.vectors, texts, payloads, upsert
        )
        return Written(assigned, embedded.truncated.tolist())

    async def search(
        self,
        queries: Sequence[str],
        top_k: int,
        filter: dict[str, Any] | None = None,
        *,
        rerank: Literal["none", "geodesic"] = "none",
        mode: Mode = "dense",
        fusion: Fusion | None = None,
        client: str | None = None,
        arrived: float | None = None,
    ) -> Found:
        """The ``top_k`` best documents per query in ``mode``; ``fusion`` for "hybrid" (RRF,
        k = 60, when None). Sparse and hybrid raise ``SparseUnavailableError`` without a BM25
        index. A geodesic ``rerank`` re-ranks the dense side (in hybrid, before the fusion);
        sparse mode has no dense side to re-rank. On a shared store (a Milvus server)
        ``RerankUnavailable``: the geodesic graph lives in one process."""

        if rerank == "geodesic" and self.store.shared:
            raise RerankUnavailable(
                "rerank 'geodesic' is not available on a shared index (a Milvus server): its "
                "graph lives in one process and would miss the other replicas' writes; use "
                "rerank 'none', or the FAISS or embedded Milvus backend (one process)"
            )
        if mode != "dense" and self.sparse is None:
            raise SparseUnavailableError(
                f'"mode": "{mode}" needs the BM25 index, which this index backend does not have '
                '(Milvus); use "mode": "dense"'
            )
        if mode == "sparse":
            ranked = await asyncio.to_thread(self._search_sparse, queries, top_k, filter)
            return Found(ranked, [False] * len(queries))
        embedded = await self.batcher.embed(queries, QUERY, client=client, arrived=arrived)
        if mode == "hybrid":
            fused = await asyncio.to_thread(
                self._search_hybrid,
                queries,
                embedded.vectors,
                top_k,
                filter,
                fusion or Fusion(),
                rerank,
            )
            return Found(fused, embedded.truncated.tolist())
        search = self._search_geodesic if rerank == "geodesic" else self.store.search
        hits = await asyncio.to_thread(search, embedded.vectors, top_k, filter)
        return Found(hits, embedded.truncated.tolist())

    async def get(self, id: int) -> Document | None:
        return await asyncio.to_thread(self.store.get, id)

    async def delete(self, id: int) -> bool:
        """Whether the document existed."""
        return await self.delete_many([id]) > 0

    async def get_many(self, ids: Sequence[int]) -> list[Document]:
        return await asyncio.to_thread(self.store.get_many, ids)

    async def scan(self, after: int, limit: int, filter: dict[str, Any] | None) -> list[Document]:
        return await asyncio.to_thread(self.store.scan, after, limit, filter)

    async def count(self, filter: dict[str, Any] | None) -> int:
        return await asyncio.to_thread(self.store.count, filter)

    async def delete_many(self, ids: Sequence[int]) -> int:
        """How many of the documents existed."""
        return await asyncio.to_thread(
            self._on_disk, self._deleted, self.store.delete, ids, lambda: ids
        )

    async def delete_where(self, filter: dict[str, Any]) -> int:
        return await asyncio.to_thread(
            self._on_disk,
            self._deleted,
            self.store.delete_where,
            filter,
            lambda: self._matching_ids(filter),
        )

    def save(self) -> None:
        """Snapshot the vector index and the BM25 index, so the next start need not rebuild."""
        with self._writes:
            if self.store.persistent:
                self.store.save()
            if self.sparse is not None and self.sparse.path is not None:
                self.sparse.save()

    async def set_payload(self, id: int, payload: dict[str, Any]) -> Document | None:
        """The updated document, or None if it does not exist. The geodesic graph stays: it
        depends on vectors only."""
        if not await asyncio.to_thread(self._on_disk, self.store.set_payload, id, payload):
            return None
        return await self.get(id)

    def _on_disk(self, write: Callable[..., T], *args: Any) -> T:
        """Run one write: refused before it starts when the data directory cannot take it, and
        not acknowledged when the directory vanished while it ran (it went to unlinked files);
        what the disk refuses inside it is raised as a ``StorageError``."""
        path = None if self.directory is None else self.directory.path
        with storage_errors(path):
            if self.directory is not None:
                self.directory.check()
            done = write(*args)
            if self.directory is not None:
                self.directory.check()
        return done

    def _search_geodesic(
        self, vectors: np.ndarray, top_k: int, filter: dict[str, Any] | None
    ) -> list[list[Hit]]:
        candidates = self.store.search(vectors, self.reranker.fetch_size(top_k), filter)
        return self.reranker.rerank(candidates, top_k)

    def _search_sparse(
        self, queries: Sequence[str], top_k: int, filter: dict[str, Any] | None
    ) -> list[list[RankedHit]]:
        assert self.sparse is not None
        allowed = None if filter is None else self._matching_ids(filter)
        found = [self.sparse.search(q, top_k, allowed) for q in queries]
        docs = self._documents(i for hits in found for i, _ in hits)
        return [
            [
                RankedHit(i, s, docs[i].text, docs[i].payload, None, None, rank, s)
                for rank, (i, s) in enumerate(hits, start=1)
                if i in docs
            ]
            for hits in found
        ]

    def _search_hybrid(
        self,
        queries: Sequence[str],
        vectors: np.ndarray,
        top_k: int,
        filter: dict[str, Any] | None,
        fusion: Fusion,
        rerank: Literal["none", "geodesic"] = "none",
    ) -> list[list[RankedHit]]:
        assert self.sparse is not None
        depth = max(top_k, HYBRID_DEPTH)
        if rerank == "geodesic":
            reranked = self._search_geodesic(vectors, depth, filter)
            dense = [[(h.id, h.score) for h in hits] for hits in reranked]
        else:  # ids and scores only: the fusion keeps top_k of 2 x depth candidates
            dense = self.store.search_ids(vectors, depth, filter)
        allowed = None if filter is None else self._matching_ids(filter)
        sparse = [self.sparse.search(q, depth, allowed) for q in queries]
        fused = [fuse(d, s, fusion, top_k) for d, s in zip(dense, sparse, strict=True)]
        docs = self._documents(f.id for hits in fused for f in hits)
        return [
            [
                RankedHit(
                    f.id,
                    f.score,
                    docs[f.id].text,
                    docs[f.id].payload,
                    f.dense_rank,
                    f.dense_score,
                    f.sparse_rank,
                    f.sparse_score,
                )
                for f in hits
                if f.id in docs
            ]
            for hits in fused
        ]

    def _documents(self, ids: Any) -> dict[int, Document]:
        return {d.id: d for d in self.store.get_many(sorted(set(ids)))}

    def _matching_ids(self, filter: dict[str, Any]) -> list[int]:
        """Every stored id whose payload matches ``filter`` (ids only: one index lookup, not a
        read of every matching document)."""
        return [int(i) for i in self.store.ids(filter)]

    def _deleted(
        self, delete: Callable[[Any], int], what: Any, doomed: Callable[[], Sequence[int]]
    ) -> int:
        with self._writes:
            ids = doomed() if self.sparse is not None else []
            deleted = delete(what)
            if self.sparse is not None and deleted:
                self.sparse.delete(ids)
        if deleted:
            self.reranker.mark_stale()
        return deleted

    def _write(
        self,
        ids: Sequence[int | None],
        vectors: np.ndarray,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any]],
        upsert: bool,
    ) -> list[int]:
        write = self.store.upsert if upsert else self.store.add
        with self._writes:  # new ids are written before another write of this process starts
            assigned = self._assign_ids(ids)
            write(assigned, vectors, texts, payloads)
            if self.sparse is not None:
                self.sparse.upsert(assigned, texts)
        self.reranker.mark_stale()
        return assigned

    def _assign_ids(self, ids: Sequence[int | None]) -> list[int]:
        """Keep given ids; the others get new ones from the store (`reserve_ids`: never
        handed out before, by this process or another), above the ids given here, up to
        `max_id` (the largest id the HTTP API takes back)."""
        given = [i for i in ids if i is not None]
        if len(given) == len(ids):
            return list(given)
        fresh = self.store.reserve_ids(len(ids) - len(given), after=max(given, default=-1))
        if fresh[-1] > self.max_id:
            raise NoIdLeftError(
                f"no ids are left to assign up to {self.max_id} (2**53 - 1, what JSON clients "
                "keep exact); give the documents ids"
            )
        new = iter(fresh)
        return [next(new) if i is None else i for i in ids]
