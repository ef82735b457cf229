"""Shared by the index tests: random unit vectors, a filled store, brute-force search."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from baihua.index import FaissStore

HAS_GPU = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


DIM = 32


def faiss_search_settings(store: FaissStore) -> dict[str, int]:
    """The search settings FAISS reports for the store's index: HNSW's ef*, else IVF's nprobe."""
    index = faiss.downcast_index(store._index.index)
    if isinstance(index, faiss.IndexHNSW):
        return {"efSearch": index.hnsw.efSearch, "efConstruction": index.hnsw.efConstruction}
    return {"nprobe": faiss.extract_index_ivf(index).nprobe}


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def filled_store(n: int, factory: str = "Flat", **kwargs: Any) -> tuple[FaissStore, np.ndarray]:
    vectors = unit_vectors(n)
    store = FaissStore(DIM, factory, **kwargs)
    store.add(
        np.arange(n), vectors, [f"doc {i}" for i in range(n)], [{"g": i % 5} for i in range(n)]
    )
    store.wait_trained()  # an index that trains does so in a thread
    return store, vectors


def brute_force(
    ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    return ids[order], np.take_along_axis(scores, order, axis=1)


def assert_matches_brute_force(
    hits: list[list[Any]], ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, top_k: int
) -> None:
    """Same ranked scores as brute force, and each hit's score is its true score (ties may swap)."""
    _, expected_scores = brute_force(ids, vectors, queries, top_k)
    true_score = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    for row, row_hits in enumerate(hits):
        got_ids = [h.id for h in row_hits]
        got_scores = np.array([h.score for h in row_hits], dtype=np.float32)
        assert len(set(got_ids)) == len(got_ids)
        np.testing.assert_allclose(got_scores, expected_scores[row], atol=1e-5)
        recomputed = vectors[[true_score[i] for i in got_ids]] @ queries[row]
        np.testing.assert_allclose(got_scores, recomputed, atol=1e-5)


def recall_at_k(hits: list[list[Any]], expected_ids: np.ndarray) -> float:
    k = expected_ids.shape[1]
    found = [
        len({h.id for h in row} & set(exp.tolist()))
        for row, exp in zip(hits, expected_ids, strict=True)
    ]
    return sum(found) / (k * len(hits))


def reference_matches(payload: dict[str, Any], filter: dict[str, Any]) -> bool:
    """The filter language read straight from its JSON, independently of index/filters.py."""
    for key, condition in filter.items():
        if key == "$and":
            ok = all(reference_matches(payload, f) for f in condition)
        elif key == "$or":
            ok = any(reference_matches(payload, f) for f in condition)
        elif isinstance(condition, dict):
            ok = all(_reference_op(payload, key, op, v) for op, v in condition.items())
        else:
            ok = _reference_op(payload, key, "$eq", condition)
        if not ok:
            return False
    return True


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _reference_op(payload: dict[str, Any], key: str, op: str, operand: Any) -> bool:
    def same(value: Any) -> bool:
        return key in payload and _kind(payload[key]) == _kind(value) and payload[key] == value

    if op in ("$eq", "$ne"):
        return same(operand) == (op == "$eq")
    if op in ("$in", "$nin"):
        return any(same(v) for v in operand) == (op == "$in")
    if key not in payload or _kind(payload[key]) != _kind(operand):
        return False
    value = payload[key]
    return {
        "$gt": value > operand,
        "$gte": value >= operand,
        "$lt": value < operand,
        "$lte": value <= operand,
    }[op]
