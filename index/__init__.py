"""Vector storage and retrieval: documents with stable ids searched through FAISS."""

from index.geodesic import GeodesicReranker, KnnGraph
from index.store import (
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
