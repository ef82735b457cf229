"""Vector storage and retrieval: documents with stable ids searched through FAISS."""

from baihua.index.geodesic import GeodesicReranker, KnnGraph
from baihua.index.store import (
    Document,
    DuplicateIdError,
    Hit,
    StoreLockedError,
    StoreMismatchError,
    VectorStore,
)

__all__ = [
    "Document",
    "DuplicateIdError",
    "GeodesicReranker",
    "Hit",
    "KnnGraph",
    "StoreLockedError",
    "StoreMismatchError",
    "VectorStore",
]
