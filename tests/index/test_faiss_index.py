"""The FAISS index lifecycle: factories, training, compaction, GPU placement."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import baihua.index.faiss_index
from baihua.index import FaissStore, StoreSettingError
from baihua.index.faiss_index import FaissIndex
from tests.index.support import (
    DIM,
    HAS_GPU,
    assert_matches_brute_force,
    brute_force,
    faiss_search_settings,
    filled_store,
    recall_at_k,
    unit_vectors,
)


def test_ivf_probing_every_list_equals_brute_force() -> None:
    store, vectors = filled_store(2000, "IVF16,Flat", search_params="nprobe=16")
    queries = unit_vectors(50, seed=1)

    hits = store.search(queries, 10)

    assert store.is_trained
    expected_ids, expected_scores = brute_force(np.arange(2000), vectors, queries, 10)
    assert [[h.id for h in row] for row in hits] == expected_ids.tolist()
    np.testing.assert_allclose([[h.score for h in row] for row in hits], expected_scores, atol=1e-5)


def test_hnsw_recall_at_10_is_at_least_0_9() -> None:
    store, vectors = filled_store(3000, "HNSW16", search_params="efSearch=64")
    queries = unit_vectors(100, seed=1)

    hits = store.search(queries, 10)

    expected_ids, _ = brute_force(np.arange(3000), vectors, queries, 10)
    assert recall_at_k(hits, expected_ids) >= 0.9


@pytest.mark.parametrize(("factory", "params"), [("PQ8x4np", ""), ("IVF16,PQ8x4np", "nprobe=16")])
def test_pq_factories_train_and_return_top_k(factory: str, params: str) -> None:
    store, vectors = filled_store(1000, factory, search_params=params)
    store.train()  # retrains on demand, on all stored vectors
    queries = unit_vectors(20, seed=1)

    hits = store.search(queries, 10)

    assert store.is_trained
    assert all(len(row) == 10 for row in hits)
    expected_ids, _ = brute_force(np.arange(1000), vectors, queries, 10)
    assert recall_at_k(hits, expected_ids) >= 0.15  # 4-bit PQ codes are coarse


def test_index_that_needs_training_searches_exactly_until_enough_vectors() -> None:
    vectors = unit_vectors(700)
    queries = unit_vectors(10, seed=1)
    store = FaissStore(DIM, "IVF16,Flat", search_params="nprobe=1")
    store.add(np.arange(100), vectors[:100], ["t"] * 100)

    assert not store.is_trained
    assert_matches_brute_force(store.search(queries, 5), np.arange(100), vectors[:100], queries, 5)

    store.add(np.arange(100, 700), vectors[100:], ["t"] * 600)  # 39 per list x 16 lists = 624
    assert store.wait_trained()


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat"])
def test_deleted_documents_never_appear_in_search(factory: str) -> None:
    store, vectors = filled_store(400, factory)
    deleted = np.arange(0, 400, 3)
    for chunk in np.array_split(deleted, 10):  # past the compaction threshold on the way
        store.delete(chunk)
    kept = np.setdiff1d(np.arange(400), deleted)

    hits = store.search(vectors[:20], len(kept))

    assert all(sorted(h.id for h in row) == kept.tolist() for row in hits)


@pytest.mark.parametrize(
    ("factory", "message"), [("Bogus", "cannot build"), ("IDMap2,Flat", "IDMap")]
)
def test_unusable_factory_raises_value_error(factory: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaissStore(8, factory)


@pytest.mark.parametrize(
    ("factory", "params", "expected"),
    [
        ("HNSW16", "", {"efSearch": 384, "efConstruction": 200}),  # the store's HNSW defaults
        ("HNSW16", "efSearch=77, efConstruction=50", {"efSearch": 77, "efConstruction": 50}),
        ("IVF16,Flat", "", {"nprobe": 1}),
        ("IVF16,Flat", "nprobe=16", {"nprobe": 16}),
        ("PCA16,IVF16,Flat", "nprobe=3", {"nprobe": 3}),
    ],
)
def test_search_params_are_what_faiss_reports(
    factory: str, params: str, expected: dict[str, int]
) -> None:
    store, _ = filled_store(1000, factory, search_params=params)  # IVF16 trains from 624

    assert store.is_trained
    assert faiss_search_settings(store) == expected


@pytest.mark.parametrize(
    ("factory", "params", "message"),
    [
        ("Flat", "efSearch=512", "'Flat', which has no parameter 'efSearch' (it takes none"),
        ("HNSW16", "efsearch=64", "no parameter 'efsearch' (it takes efSearch, efConstruction)"),
        ("IVF16,Flat", "nprobe=abc", "'nprobe=abc' is not name=number"),
        ("IVF16,Flat", "nprobe", "'nprobe' is not name=number"),
        ("IVF16,Flat", "nprobe=-1", "nprobe must be a whole number from 1"),
        ("HNSW16", "efSearch=12.5", "efSearch must be a whole number from 1"),
    ],
)
def test_unusable_search_params_are_refused_when_the_store_opens(
    factory: str, params: str, message: str
) -> None:
    with pytest.raises(StoreSettingError) as caught:
        FaissStore(DIM, factory, search_params=params)

    assert (caught.value.setting, caught.value.value) == ("search_params", params)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_importing_the_store_lets_batched_flat_search_use_blas() -> None:
    assert baihua.index.faiss_index.faiss.cvar.distance_compute_blas_threshold <= 20


@pytest.mark.skipif(HAS_GPU, reason="checks the error on machines without a FAISS GPU")
def test_use_gpu_true_without_a_gpu_raises() -> None:
    with pytest.raises(ValueError, match="use_gpu=True"):
        FaissStore(8, use_gpu=True)


@pytest.mark.skipif(not HAS_GPU, reason="needs a FAISS GPU build and a visible GPU")
@pytest.mark.parametrize(("factory", "params"), [("Flat", ""), ("IVF16,Flat", "nprobe=16")])
def test_gpu_store_equals_brute_force_and_saves_a_cpu_copy(
    tmp_path: Path, factory: str, params: str
) -> None:
    vectors = unit_vectors(2000)
    queries = unit_vectors(20, seed=1)
    store = FaissStore.open(tmp_path / "store", DIM, factory, use_gpu=True, search_params=params)
    store.add(np.arange(2000), vectors, ["t"] * 2000)
    assert store.wait_trained()
    assert store.on_gpu
    hits = store.search(queries, 10)
    assert_matches_brute_force(hits, np.arange(2000), vectors, queries, 10)
    store.save()
    store.close()

    with FaissStore.open(
        tmp_path / "store", DIM, factory, use_gpu=False, search_params=params
    ) as on_cpu:
        assert not on_cpu.on_gpu
        assert [[h.id for h in row] for row in on_cpu.search(queries, 10)] == [
            [h.id for h in row] for row in hits
        ]


def test_hnsw_with_the_store_defaults_has_recall_at_10_of_at_least_0_95() -> None:
    store, vectors = filled_store(5000, "HNSW32")
    queries = unit_vectors(100, seed=1)

    hits = store.search(queries, 10)

    expected_ids, _ = brute_force(np.arange(5000), vectors, queries, 10)
    assert recall_at_k(hits, expected_ids) >= 0.95


def test_searches_and_writes_proceed_while_the_index_trains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    training, release = threading.Event(), threading.Event()
    trained_aside = FaissIndex.trained_aside

    def held(self: FaissIndex, vectors: np.ndarray) -> Any:
        training.set()
        assert release.wait(30)
        return trained_aside(self, vectors)

    monkeypatch.setattr(FaissIndex, "trained_aside", held)
    vectors = unit_vectors(1000)
    queries = unit_vectors(10, seed=1)
    store = FaissStore(DIM, "IVF16,Flat", search_params="nprobe=16")  # every list: exact
    store.add(np.arange(700), vectors[:700], ["t"] * 700)  # past 39 x 16: training starts
    assert training.wait(30)

    store.add(np.arange(700, 1000), vectors[700:], ["t"] * 300)
    store.delete([5, 800])
    assert store.set_payload(3, {"x": 1})
    kept = np.setdiff1d(np.arange(1000), [5, 800])
    assert_matches_brute_force(store.search(queries, 5), kept, vectors[kept], queries, 5)
    assert not store.is_trained

    release.set()
    assert store.wait_trained(30)
    assert_matches_brute_force(store.search(queries, 5), kept, vectors[kept], queries, 5)
    assert len(store) == 998
