"""Vector storage and retrieval: documents with stable ids behind one ``Store`` protocol.

``FaissStore`` (FAISS over SQLite, one machine) and ``MilvusStore`` (``index.milvus_store``,
with the optional pymilvus) implement it on ``StoreBase``, which holds what engines share.
"""

from baihua.index.base import StoreBase
from baihua.index.errors import (
    DuplicateIdError,
    IdsExhaustedError,
    StoreCorruptError,
    StoreInputError,
    StoreLockedError,
    StoreMismatchError,
    StoreSettingError,
)
from baihua.index.faiss_store import FaissStore
from baihua.index.filters import FilterError
from baihua.index.geodesic import GeodesicReranker, KnnGraph
from baihua.index.store import Document, Hit, Store

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
    "StoreBase",
    "StoreCorruptError",
    "StoreInputError",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreSettingError",
]
