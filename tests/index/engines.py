"""The two store engines, opened the same way for the contract tests (and their subprocesses)."""

from __future__ import annotations

from pathlib import Path

from baihua.core.spec import EmbeddingSpec
from baihua.index import FaissStore, Store

ENGINES = ["faiss", "milvus"]


def open_engine(engine: str, location: Path, dim: int, spec: EmbeddingSpec | None = None) -> Store:
    """The store of ``engine`` kept in ``location``: exact search (Flat / FLAT) by inner product."""
    if engine == "faiss":
        return FaissStore.open(location / "faiss", dim, spec=spec)
    from baihua.index.milvus_store import MilvusStore

    return MilvusStore(str(location / "milvus.db"), dim, collection="docs", spec=spec)
