"""The store engines, opened the same way for the contract tests (and their subprocesses): FAISS,
Milvus's embedded engine (a file), and Milvus as a server (the ``milvus_server`` fixture's)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from baihua.core.spec import EmbeddingSpec
from baihua.index import FaissStore, Store
from tests.milvus_server import MILVUS_SERVER_URI

ENGINES = ["faiss", "milvus", "milvus-server"]


def open_engine(engine: str, location: Path, dim: int, spec: EmbeddingSpec | None = None) -> Store:
    """The store of ``engine`` kept in ``location``: exact search (Flat / FLAT) by inner product.
    On the server, ``location`` names a collection of its own."""
    if engine == "faiss":
        return FaissStore.open(location / "faiss", dim, spec=spec)
    from baihua.index.milvus_store import MilvusStore

    if engine == "milvus-server":
        collection = "docs_" + hashlib.sha256(str(location).encode()).hexdigest()[:24]
        return MilvusStore(os.environ[MILVUS_SERVER_URI], dim, collection=collection, spec=spec)
    return MilvusStore(str(location / "milvus.db"), dim, collection="docs", spec=spec)
