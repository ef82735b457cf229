"""Filtered search returns the brute-force top k over the matching documents."""

from __future__ import annotations

from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baihua.index import FaissStore
from tests.index.support import (
    DIM,
    assert_matches_brute_force,
    brute_force,
    recall_at_k,
    reference_matches,
    unit_vectors,
)

coordinates = st.floats(-1, 1, width=32)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_filtered_flat_search_equals_brute_force_over_matching_documents(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(1, 40), label="n")
    vectors = data.draw(hnp.arrays(np.float32, (n, 8), elements=coordinates), label="vectors")
    queries = data.draw(hnp.arrays(np.float32, (2, 8), elements=coordinates), label="queries")
    groups = data.draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n), label="groups")
    wanted = data.draw(st.sampled_from("abc"), label="wanted")
    top_k = data.draw(st.integers(1, n + 2), label="top_k")
    store = FaissStore(8)
    store.add(np.arange(n), vectors, ["t"] * n, [{"group": g, "n": 1} for g in groups])

    hits = store.search(queries, top_k, filter={"group": wanted, "n": 1})

    matching = np.array([i for i, g in enumerate(groups) if g == wanted], dtype=np.int64)
    assert [len(row) for row in hits] == [min(top_k, len(matching))] * 2
    assert all(h.payload["group"] == wanted for row in hits for h in row)
    assert_matches_brute_force(hits, matching, vectors[matching], queries, top_k)


def test_ivf_returns_top_k_when_probed_lists_hold_too_few_matches() -> None:
    vectors = unit_vectors(2000)
    rare = np.arange(0, 2000, 160)  # 13 documents spread over the lists
    store = FaissStore(DIM, "IVF16,Flat", search_params="nprobe=1")
    store.add(np.arange(2000), vectors, ["t"] * 2000, [{"rare": i in rare} for i in range(2000)])
    queries = unit_vectors(5, seed=1)

    hits = store.search(queries, 10, filter={"rare": True})

    assert all(len(row) == 10 for row in hits)
    assert_matches_brute_force(hits, rare, vectors[rare], queries, 10)


def catalogue(
    n: int, factory: str, *, away_from: np.ndarray | None = None, **kwargs: Any
) -> tuple[FaissStore, np.ndarray, list[dict]]:
    """``n`` documents with a price and a language; with ``away_from`` (queries), ``near`` marks
    the NEAR nearest documents of each query, more than a filtered search's first candidates, so
    a filter on ``near: false`` leaves those without a match."""
    rng = np.random.default_rng(3)
    stored: list[dict] = [
        {"price": int(p), "lang": str(g)}
        for p, g in zip(rng.integers(0, 100, n), rng.choice(["zh", "en"], n), strict=True)
    ]
    vectors = unit_vectors(n)
    if away_from is not None:
        near, _ = brute_force(np.arange(n), vectors, away_from, NEAR)
        for i, payload in enumerate(stored):
            payload["near"] = i in set(near.ravel().tolist())
    store = FaissStore(DIM, factory, **kwargs)
    store.add(np.arange(n), vectors, ["t"] * n, stored)
    return store, vectors, stored


NEAR = 200

FILTERS = [
    {"price": {"$gte": 30}},
    {"$or": [{"lang": "zh"}, {"price": {"$lt": 10}}]},
    {"lang": {"$ne": "en"}, "price": {"$nin": [1, 2, 3]}},
]


@pytest.mark.parametrize("filter", FILTERS)
@pytest.mark.parametrize(("factory", "params"), [("Flat", ""), ("IVF16,Flat", "nprobe=16")])
def test_a_filter_keeping_many_documents_is_answered_from_the_unfiltered_candidates(
    factory: str, params: str, filter: dict[str, Any]
) -> None:
    store, vectors, stored = catalogue(4000, factory, search_params=params)
    matching = np.array([i for i, p in enumerate(stored) if reference_matches(p, filter)])
    queries = unit_vectors(10, seed=1)

    hits = store.search(queries, 10, filter=filter)

    assert store._index._selects is None  # no selector was needed
    assert_matches_brute_force(hits, matching, vectors[matching], queries, 10)


@pytest.mark.parametrize("filter", FILTERS)
@pytest.mark.parametrize(("factory", "params"), [("Flat", ""), ("IVF16,Flat", "nprobe=16")])
def test_exact_index_types_search_the_filter_through_a_faiss_selector(
    factory: str, params: str, filter: dict[str, Any]
) -> None:
    queries = unit_vectors(10, seed=1)
    store, vectors, stored = catalogue(6000, factory, away_from=queries, search_params=params)
    filter = {"$and": [filter, {"near": False}]}
    matching = np.array([i for i, p in enumerate(stored) if reference_matches(p, filter)])
    assert len(matching) > 1024  # past the direct exact scoring of small matching sets

    hits = store.search(queries, 10, filter=filter)

    assert store._index._selects is True  # the selector path answered, not the widening loop
    assert_matches_brute_force(hits, matching, vectors[matching], queries, 10)


def test_hnsw_keeps_recall_over_the_matching_documents() -> None:
    store, vectors, stored = catalogue(4000, "HNSW16", search_params="efSearch=64")
    filter = FILTERS[0]
    matching = np.array([i for i, p in enumerate(stored) if reference_matches(p, filter)])
    queries = unit_vectors(50, seed=1)

    hits = store.search(queries, 10, filter=filter)

    assert all(stored[h.id]["price"] >= 30 for row in hits for h in row)
    expected_ids, _ = brute_force(matching, vectors[matching], queries, 10)
    assert recall_at_k(hits, expected_ids) >= 0.9


def test_hnsw_searches_a_filter_excluding_the_neighbourhood_through_a_selector() -> None:
    queries = unit_vectors(10, seed=1)
    store, vectors, stored = catalogue(
        6000, "HNSW16", away_from=queries, search_params="efSearch=64"
    )
    filter = {"price": {"$gte": 30}, "near": False}

    hits = store.search(queries, 10, filter=filter)

    assert store._index._selects is True
    assert [len(row) for row in hits] == [10] * 10
    assert all(reference_matches(stored[h.id], filter) for row in hits for h in row)


def test_index_without_selectors_falls_back_to_widening_and_keeps_only_matches() -> None:
    queries = unit_vectors(10, seed=1)
    store, vectors, stored = catalogue(4000, "PQ8x4np")
    store.train()
    for row in store.search(queries, NEAR):  # PQ's own first candidates leave the filter
        for hit in row:
            store.set_payload(hit.id, stored[hit.id] | {"near": True})
            stored[hit.id]["near"] = True
    filter = {"$and": [FILTERS[1], {"near": {"$ne": True}}]}

    hits = store.search(queries, 10, filter=filter)

    assert store._index._selects is False  # IndexPQ takes no IDSelector
    assert all(len(row) == 10 for row in hits)
    assert all(reference_matches(stored[h.id], filter) for row in hits for h in row)


def test_dead_positions_are_excluded_through_the_selector() -> None:
    store, vectors, _ = catalogue(2000, "Flat")
    store.delete(np.arange(0, 2000, 9))  # under the compaction threshold: positions stay dead
    kept = np.setdiff1d(np.arange(2000), np.arange(0, 2000, 9))
    queries = unit_vectors(10, seed=1)

    hits = store.search(queries, 10)

    assert store._index.n_dead and store._index._selects is True
    assert_matches_brute_force(hits, kept, vectors[kept], queries, 10)


@pytest.mark.parametrize("write", ["set_payload", "upsert", "delete"])
@pytest.mark.parametrize(("factory", "params"), [("Flat", ""), ("IVF16,Flat", "nprobe=16")])
def test_a_repeated_selective_filter_sees_every_write_in_between(
    write: str, factory: str, params: str
) -> None:
    n, matching = 60_000, 1100  # at least 1,024 matches, under 2 %: their ids are listed
    vectors = unit_vectors(n)
    store = FaissStore(DIM, factory, search_params=params)
    store.add(np.arange(n), vectors, ["t"] * n, [{"g": int(i < matching)} for i in range(n)])
    assert store.wait_trained()
    where = {"g": 1}
    before = store.search(vectors[:3], 10, filter=where)
    assert store.search(vectors[:3], 10, filter=where) == before  # from what the first kept
    target = before[0][0].id

    if write == "set_payload":
        store.set_payload(target, {"g": 0})
    elif write == "upsert":
        store.upsert([target], vectors[target : target + 1], ["t"], [{"g": 0}])
    else:
        store.delete([target])
    after = store.search(vectors[:3], 10, filter=where)

    kept = np.setdiff1d(np.arange(matching), [target])
    assert_matches_brute_force(after, kept, vectors[kept], vectors[:3], 10)
