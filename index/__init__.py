"""Vector storage and retrieval: documents with stable ids searched through FAISS."""

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
    "Hit",
    "StoreLockedError",
    "StoreMismatchError",
    "VectorStore",
]
