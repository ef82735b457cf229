"""Documents in the vector store: embedded through the batcher, with ids assigned when omitted.

The store is thread-safe (searches in parallel, writes alone) and commits every write to its
database before returning, so an acknowledged write survives a crash; its `save()` only writes an
index snapshot that spares a rebuild on the next start, which the server does on shutdown.
Every write marks the geodesic graph stale; it is rebuilt in the background (index/geodesic.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from baihua.core.errors import BaihuaError
from baihua.index import Document, GeodesicReranker, Hit, Store
from baihua.serving.batcher import EmbedOptions, MicroBatcher

PASSAGE = EmbedOptions(text_type="passage")
QUERY = EmbedOptions(text_type="query")


@dataclass
class Written:
    ids: list[int]
    truncated: list[bool]


@dataclass
class Found:
    hits: list[list[Hit]]
    truncated: list[bool]


class NoIdLeftError(BaihuaError):
    """Ids to assign would pass the largest id allowed."""


class RerankUnavailable(BaihuaError):
    """`rerank` asks for what this store cannot do: the geodesic graph lives in one process,
    and other processes write to a shared store (a Milvus server) without it seeing."""


class DocumentIndex:
    """Add, get, delete and search documents; blocking store calls run off the event loop."""

    max_id = 2**53 - 1  # JSON clients (JavaScript) keep integers exact up to here

    def __init__(self, store: Store, batcher: MicroBatcher, reranker: GeodesicReranker) -> None:
        self.store = store
        self.batcher = batcher
        self.reranker = reranker

    async def add(
        self,
        texts: Sequence[str],
        payloads: Sequence[dict[str, Any]],
        ids: Sequence[int | None],
        *,
        upsert: bool = False,
        client: str | None = None,
    ) -> Written:
        """Embed the texts as passages and store them; `None` ids get new ones.

        Raises `index.DuplicateIdError` when an id exists and `upsert` is false. `client` names
        the sender for its share of the encoder queue.
        """
        embedded = await self.batcher.embed(texts, PASSAGE, client=client)
        assigned = await asyncio.to_thread(
            self._write, ids, embedded.vectors, texts, payloads, upsert
        )
        return Written(assigned, embedded.truncated.tolist())

    async def search(
        self,
        queries: Sequence[str],
        top_k: int,
        filter: dict[str, Any] | None = None,
        *,
        rerank: Literal["none", "geodesic"] = "none",
        client: str | None = None,
    ) -> Found:
        if rerank == "geodesic" and self.store.shared:
            raise RerankUnavailable(
                "rerank 'geodesic' is not available on a shared index (a Milvus server): its "
                "graph lives in one process and would miss the other replicas' writes; use "
                "rerank 'none', or the FAISS or embedded Milvus backend (one process)"
            )
        embedded = await self.batcher.embed(queries, QUERY, client=client)
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
        return await asyncio.to_thread(self._deleted, self.store.delete, ids)

    async def delete_where(self, filter: dict[str, Any]) -> int:
        return await asyncio.to_thread(self._deleted, self.store.delete_where, filter)

    async def set_payload(self, id: int, payload: dict[str, Any]) -> Document | None:
        """The updated document, or None if it does not exist. The geodesic graph stays: it
        depends on vectors only."""
        if not await asyncio.to_thread(self.store.set_payload, id, payload):
            return None
        return await self.get(id)

    def _search_geodesic(
        self, vectors: np.ndarray, top_k: int, filter: dict[str, Any] | None
    ) -> list[list[Hit]]:
        candidates = self.store.search(vectors, self.reranker.fetch_size(top_k), filter)
        return self.reranker.rerank(candidates, top_k)

    def _deleted(self, delete: Callable[[Any], int], what: Any) -> int:
        deleted = delete(what)
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
        assigned = self._assign_ids(ids)
        write = self.store.upsert if upsert else self.store.add
        write(assigned, vectors, texts, payloads)
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
