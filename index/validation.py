"""Checks of what callers hand a store, shared by every engine: one ``StoreInputError`` (a
``ValueError``) per mistake, naming the argument."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from baihua.index.errors import DuplicateIdError, StoreInputError, preview
from baihua.index.store import IdsLike

MAX_ID = 2**63 - 1  # SQLite INTEGER PRIMARY KEY, FAISS labels and Milvus INT64 are signed 64-bit


@dataclass(frozen=True)
class Batch:
    """Documents of one write, checked: ids unique in the call, vectors float32, payloads JSON."""

    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    texts: list[str]
    payloads: list[str]  # JSON


def check_batch(
    ids: IdsLike,
    vectors: npt.ArrayLike,
    texts: Sequence[str],
    payloads: Sequence[dict[str, Any] | None] | None,
    dim: int,
) -> Batch:
    checked_ids = check_ids(ids)
    checked_vectors = check_vectors(vectors, dim, "vectors")
    n = len(checked_ids)
    unique, counts = np.unique(checked_ids, return_counts=True)
    if (counts > 1).any():
        raise DuplicateIdError(unique[counts > 1].tolist(), stored=False)
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise StoreInputError("texts", "texts must be a sequence of str, one per id")
    if payloads is None:
        payloads = [None] * n
    for name, count in (("vectors", len(checked_vectors)), ("texts", len(texts))):
        if count != n:
            raise StoreInputError(name, f"got {n} ids but {count} {name}")
    if len(payloads) != n:
        raise StoreInputError("payloads", f"got {n} ids but {len(payloads)} payloads")
    return Batch(checked_ids, checked_vectors, list(texts), [payload_json(p) for p in payloads])


def check_vectors(vectors: npt.ArrayLike, dim: int, name: str) -> npt.NDArray[np.float32]:
    array = np.asarray(vectors)
    if array.dtype.kind not in "fiu":
        raise StoreInputError(name, f"{name} must be real numbers; got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != dim:
        hint = "; wrap a single vector as v[None, :]" if array.ndim == 1 else ""
        raise StoreInputError(name, f"{name} must have shape (n, {dim}); got {array.shape}{hint}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise StoreInputError(
            name, f"{name} contain NaN or infinity in rows {preview(bad.tolist())}"
        )
    return array


def check_ids(ids: IdsLike) -> npt.NDArray[np.int64]:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise StoreInputError(
            "ids", f"ids must be a 1-D sequence of integers; got shape {array.shape}"
        )
    if not array.size:
        return np.empty(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        raise StoreInputError(
            "ids", f"ids must be integers; got dtype {array.dtype}: {preview(array)}"
        )
    bad = array[(array < 0) | (array > MAX_ID)]
    if bad.size:
        raise StoreInputError("ids", f"ids must be in [0, 2**63 - 1]; got {preview(bad)}")
    return array.astype(np.int64)


def check_id(id: object) -> int:
    if isinstance(id, bool | np.bool_) or not isinstance(id, int | np.integer):
        raise StoreInputError("id", f"id must be an integer; got {id!r}")
    if not 0 <= id <= MAX_ID:
        raise StoreInputError("id", f"id must be in [0, 2**63 - 1]; got {id}")
    return int(id)


def check_top_k(top_k: object) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise StoreInputError("top_k", f"top_k must be an integer >= 1; got {top_k!r}")
    return int(top_k)


def check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise StoreInputError(
            "batch_size", f"batch_size must be an integer >= 1; got {batch_size!r}"
        )
    return batch_size


def payload_json(payload: object) -> str:
    if payload is None:
        return "{}"
    if not isinstance(payload, dict) or not all(isinstance(k, str) for k in payload):
        raise StoreInputError("payload", f"payload must be a dict with str keys; got {payload!r}")
    try:
        return json.dumps(payload, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise StoreInputError(
            "payload", f"payload is not JSON-serialisable ({error}): {payload!r}"
        ) from None
