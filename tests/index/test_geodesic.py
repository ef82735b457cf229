"""Geodesic re-ranking: graph distances, the geodesic table, batches, fallbacks, and background
rebuilds."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components, shortest_path

from baihua.index import FaissStore, GeodesicReranker, Hit, KnnGraph

DIM = 16


def on_sphere(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Planar points lifted into DIM dims far from the origin, rotated and normalised: the
    normalisation barely bends them, so distances in the plane order cosine distances."""
    lifted = np.zeros((len(points), DIM))
    lifted[:, :2] = points
    lifted[:, 2] = 10.0
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((DIM, DIM)))
    x = lifted @ rotation
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def circle(angles: np.ndarray, radius: float = 1.0) -> np.ndarray:
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def top_candidates(vectors: np.ndarray, query: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    scores = (vectors @ query).astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:m]
    return order, scores[order]


def test_graph_distances_equal_isomaps_geodesic_distances() -> None:
    from sklearn.manifold import Isomap

    x = unit_vectors(300, 8, seed=0)
    graph = KnnGraph.build(np.arange(300), x, k=8)
    assert connected_components(graph.adjacency)[0] == 1  # else Isomap patches the graph
    isomap = Isomap(n_neighbors=8, metric="cosine").fit(x.astype(np.float64))
    np.testing.assert_allclose(
        shortest_path(graph.adjacency, directed=False), isomap.dist_matrix_, atol=1e-5
    )


def test_graph_nodes_are_the_ids_in_ascending_order() -> None:
    x = unit_vectors(5, 4, seed=1)
    graph = KnnGraph.build([40, 10, 30, 20, 50], x, k=2)
    assert graph.ids.tolist() == [10, 20, 30, 40, 50]
    assert 30 in graph and 35 not in graph


def test_identical_vectors_are_joined_and_never_their_own_neighbour() -> None:
    x = np.repeat(unit_vectors(3, 4, seed=2), 3, axis=0)  # three copies of three vectors
    graph = KnnGraph.build(np.arange(9), x, k=2)
    assert graph.adjacency.diagonal().sum() == 0
    copies = shortest_path(graph.adjacency, directed=False)[np.arange(9) // 3 == 0][:, :3]
    np.testing.assert_allclose(copies, 0, atol=1e-6)


def test_two_circles_geodesic_ranks_the_querys_circle_first() -> None:
    n = 300
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    vectors = on_sphere(np.concatenate([circle(angles), circle(angles, 1.3)]))
    query = on_sphere(circle(np.array([np.pi / n])))[0]  # between two inner points
    candidates, scores = top_candidates(vectors, query, 60)
    inner = candidates < n
    assert not np.all(inner[: inner.sum()]), "cosine order should interleave the circles"

    graph = KnnGraph.build(np.arange(2 * n), vectors, k=10)
    order, distance = graph.rank(candidates, scores, top_k=60)

    ranked = candidates[order]
    assert (ranked[: inner.sum()] < n).all() and (ranked[inner.sum() :] >= n).all()
    arc = np.abs(np.angle(np.exp(1j * (angles[ranked[: inner.sum()]] - np.pi / n))))
    assert (np.diff(arc) >= -1e-9).all(), "inner candidates should come in order along the arc"
    assert (np.diff(distance) >= 0).all()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(12, 80),
    k=st.integers(2, 6),
    reach=st.integers(1, 30),
)
def test_table_distances_are_full_graph_paths_from_the_querys_nearest(
    seed: int, n: int, k: int, reach: int
) -> None:
    x = unit_vectors(n, 4, seed)
    query = unit_vectors(1, 4, seed + 1)[0]
    candidates, scores = top_candidates(x, query, max(k, n // 2))
    entries = candidates[:k]  # the query's k nearest, all in the graph
    complete = KnnGraph.build(np.arange(n), x, k=k, reach=n)
    paths = shortest_path(complete.adjacency, directed=False, indices=entries)
    full = np.min((1.0 - scores[:k])[:, None] + paths[:, candidates], axis=0)

    exact, reached_all = complete.distances(candidates, scores)
    np.testing.assert_array_equal(reached_all, np.isfinite(full))
    np.testing.assert_allclose(exact[reached_all], full[reached_all], rtol=1e-9)

    bounded_graph = KnnGraph.build(np.arange(n), x, k=k, reach=reach)
    bounded, reached = bounded_graph.distances(candidates, scores)
    assert (reached <= reached_all).all()
    assert (bounded[reached] >= full[reached] - 1e-12).all()
    # Exact wherever the best entry's table row holds the candidate.
    held = bounded_graph.table.toarray() > 0
    held[np.arange(n), np.arange(n)] = True
    best = np.argmin((1.0 - scores[:k])[:, None] + paths[:, candidates], axis=0)
    exact_here = held[entries[best], candidates] & reached_all
    np.testing.assert_allclose(bounded[exact_here], full[exact_here], rtol=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60), reach=st.integers(1, 70))
def test_table_rows_are_each_nodes_nearest_along_the_graph(seed: int, n: int, reach: int) -> None:
    x = unit_vectors(n, 3, seed)
    graph = KnnGraph.build(np.arange(n), x, k=3, reach=reach)
    full = shortest_path(graph.adjacency, directed=False)
    for node in range(n):
        row = graph.table[node]
        assert node in row.indices and row.nnz <= min(reach, n)
        np.testing.assert_allclose(row.data, full[node, row.indices], atol=1e-12)
        # Nothing left out is nearer than what was kept.
        left_out = np.setdiff1d(np.flatnonzero(np.isfinite(full[node])), row.indices)
        if len(left_out) and row.nnz == min(reach, n):
            assert full[node, left_out].min() >= row.data.max() - 1e-12


def test_a_batch_ranks_each_query_as_alone_and_pads_missing_candidates() -> None:
    x = unit_vectors(200, 6, seed=5)
    graph = KnnGraph.build(np.arange(200), x, k=5, reach=20)
    queries = unit_vectors(7, 6, seed=6)
    scores = queries @ x.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :40]
    ids = order.astype(np.int64)
    sims = np.take_along_axis(scores, order, axis=1).astype(np.float64)
    ids[3, 30:] = -1  # a query with fewer candidates, as FAISS pads them
    ids[5, 10] = ids[5, 2]  # a duplicate id gets the same distance twice
    batch_order, batch_distance = graph.rank_batch(ids, sims, top_k=35)
    for row in range(7):
        keep = ids[row] >= 0
        alone_order, alone_distance = graph.rank(ids[row][keep], sims[row][keep], top_k=35)
        got = batch_order[row][batch_order[row] >= 0]
        np.testing.assert_array_equal(got, alone_order)
        np.testing.assert_allclose(batch_distance[row][: len(got)], alone_distance)
    assert (batch_order[3, 30:] == -1).all() and np.isinf(batch_distance[3, 30:]).all()
    distance, _ = graph.distances_batch(ids, sims)
    assert distance[5, 10] == distance[5, 2]


def test_candidates_missing_from_the_graph_keep_their_cosine_distance() -> None:
    scores = np.array([0.9, 0.7, 0.4])
    order, distance = KnnGraph.empty().rank([7, 3, 5], scores, top_k=3)
    assert order.tolist() == [0, 1, 2]
    np.testing.assert_allclose(distance, 1 - scores)


def test_unreached_candidates_rank_last_with_finite_distances() -> None:
    angles = np.linspace(0, 1, 20)
    vectors = on_sphere(np.concatenate([circle(angles), circle(angles, 3.0)]))
    graph = KnnGraph.build(np.arange(40), vectors, k=4)
    query = vectors[0]
    candidates, scores = top_candidates(vectors, query, 40)
    distance, reached = graph.distances(candidates, scores)
    assert reached.tolist() == (candidates < 20).tolist()
    assert np.isfinite(distance).all()
    assert distance[~reached].min() >= distance[reached].max()


# ------------------------------------------------------------------- the reranker over a store


def arc_store(angles: np.ndarray) -> FaissStore:
    store = FaissStore(DIM)
    add_arc(store, angles, start=0)
    return store


def add_arc(store: FaissStore, angles: np.ndarray, start: int) -> list[int]:
    ids = list(range(start, start + len(angles)))
    store.add(ids, on_sphere(circle(angles)), [f"doc {i}" for i in ids])
    return ids


QUERY = on_sphere(circle(np.array([0.0])))


def search(store: FaissStore, reranker: GeodesicReranker, top_k: int) -> list[Hit]:
    return reranker.rerank(store.search(QUERY, reranker.fetch_size(top_k)), top_k)[0]


def store_candidates(store: FaissStore, m: int) -> tuple[np.ndarray, np.ndarray]:
    hits = store.search(QUERY, m)[0]
    return np.array([h.id for h in hits]), np.array([h.score for h in hits])


def test_rerank_keeps_cosine_scores_and_adds_ascending_geodesic_distances() -> None:
    store = arc_store(np.linspace(0, 1, 30))
    reranker = GeodesicReranker(store, k=4)
    reranker.rebuild()
    cosine = {h.id: h.score for h in store.search(QUERY, 30)[0]}
    hits = search(store, reranker, top_k=10)
    assert len(hits) == 10
    assert all(h.score == cosine[h.id] for h in hits)
    distances = np.array([h.geodesic for h in hits], dtype=float)  # None would be NaN
    assert np.isfinite(distances).all() and (np.diff(distances) >= 0).all()


def test_added_documents_become_reachable_after_the_rebuild() -> None:
    store = arc_store(np.concatenate([np.linspace(0, 0.5, 26), np.linspace(1.0, 1.5, 26)]))
    reranker = GeodesicReranker(store, k=4, reach=100)  # tables span the whole arc
    reranker.rebuild()
    ids, scores = store_candidates(store, 52)
    _, reached = reranker.graph.distances(ids, scores)
    assert reached.tolist() == (ids < 26).tolist()  # nothing crosses the gap

    bridge = add_arc(store, np.linspace(0.52, 0.98, 24), start=100)
    reranker.mark_stale()
    assert reranker.wait(timeout=30)
    assert all(i in reranker.graph for i in bridge)
    _, reached = reranker.graph.distances(*store_candidates(store, 76))
    assert reached.all()


def test_deleted_documents_never_come_back() -> None:
    store = arc_store(np.linspace(0, 1, 40))
    reranker = GeodesicReranker(store, k=4)
    reranker.rebuild()
    gone = list(range(0, 40, 3))
    store.delete(gone)
    reranker.mark_stale()
    assert not {h.id for h in search(store, reranker, 20)} & set(gone)  # old graph in use
    assert reranker.wait(timeout=30) and not reranker.stale
    assert not any(i in reranker.graph for i in gone)
    assert not {h.id for h in search(store, reranker, 20)} & set(gone)


def test_writes_before_any_rerank_start_no_build() -> None:
    store = arc_store(np.linspace(0, 1, 10))
    reranker = GeodesicReranker(store)
    reranker.mark_stale()
    assert reranker.wait(timeout=0) and len(reranker.graph) == 0 and reranker.stale


def test_searches_keep_working_while_a_rebuild_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    store = arc_store(np.linspace(0, 1, 40))
    reranker = GeodesicReranker(store, k=4)
    reranker.rebuild()
    started, release = threading.Event(), threading.Event()
    build = KnnGraph.build.__func__  # type: ignore[attr-defined]

    def slow_build(cls: type[KnnGraph], *args: Any, **kwargs: Any) -> KnnGraph:
        started.set()
        assert release.wait(timeout=30)
        return build(cls, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(KnnGraph, "build", classmethod(slow_build))
    add_arc(store, np.array([0.001]), start=1000)
    reranker.mark_stale()
    assert started.wait(timeout=30)
    for _ in range(20):
        hits = search(store, reranker, 5)
        assert hits[0].id == 1000  # missing from the old graph: reached directly, nearest
    assert 1000 not in reranker.graph
    release.set()
    assert reranker.wait(timeout=30)
    assert 1000 in reranker.graph
    reranker.close()
