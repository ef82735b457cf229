"""Vector storage and retrieval: documents with stable ids behind one ``Store`` protocol.

``FaissStore`` (FAISS over SQLite, one machine) implements it; ``VectorStore`` is its former name.
"""

from baihua.index.faiss_store import FaissStore
from baihua.index.filters import FilterError
from baihua.index.geodesic import GeodesicReranker, KnnGraph
from baihua.index.store import (
    Document,
    DuplicateIdError,
    Hit,
    IdsExhaustedError,
    Store,
    StoreCorruptError,
    StoreLockedError,
    StoreMismatchError,
)

VectorStore = FaissStore

__all__ = [
    "Document",
    "DuplicateIdError",
    "FaissStore",
    "FilterError",
    "GeodesicReranker",
    "Hit",
    "IdsExhaustedError",
    "KnnGraph",
    "Store",
    "StoreCorruptError",
    "StoreLockedError",
    "StoreMismatchError",
    "VectorStore",
]
