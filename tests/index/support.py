"""Shared by the index tests: random unit vectors, a filled store, brute-force search."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from baihua.index import FaissStore

HAS_GPU = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


DIM = 32


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def filled_store(n: int, factory: str = "Flat", **kwargs: Any) -> tuple[FaissStore, np.ndarray]:
    vectors = unit_vectors(n)
    store = FaissStore(DIM, factory, **kwargs)
    store.add(
        np.arange(n), vectors, [f"doc {i}" for i in range(n)], [{"g": i % 5} for i in range(n)]
    )
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
