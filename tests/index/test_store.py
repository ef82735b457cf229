"""VectorStore against brute force, its document semantics, persistence and thread safety."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import baihua.index.store
from baihua.index import (
    Document,
    DuplicateIdError,
    StoreLockedError,
    StoreMismatchError,
    VectorStore,
)
from baihua.index.locks import RWLock

HAS_GPU = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
DIM = 32


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def filled_store(n: int, factory: str = "Flat", **kwargs: Any) -> tuple[VectorStore, np.ndarray]:
    vectors = unit_vectors(n)
    store = VectorStore(DIM, factory, **kwargs)
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


coordinates = st.floats(-1, 1, width=32)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_flat_search_equals_brute_force(data: st.DataObject) -> None:
    dim = data.draw(st.integers(2, 16), label="dim")
    n = data.draw(st.integers(1, 40), label="n")
    vectors = data.draw(hnp.arrays(np.float32, (n, dim), elements=coordinates), label="vectors")
    queries = data.draw(hnp.arrays(np.float32, (3, dim), elements=coordinates), label="queries")
    ids = np.array(
        data.draw(st.lists(st.integers(0, 2**63 - 1), min_size=n, max_size=n, unique=True))
    )
    top_k = data.draw(st.integers(1, n + 2), label="top_k")
    store = VectorStore(dim)
    store.add(ids, vectors, ["t"] * n)

    hits = store.search(queries, top_k)

    assert [len(row) for row in hits] == [min(top_k, n)] * 3
    assert_matches_brute_force(hits, ids, vectors, queries, top_k)


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
    store = VectorStore(8)
    store.add(np.arange(n), vectors, ["t"] * n, [{"group": g, "n": 1} for g in groups])

    hits = store.search(queries, top_k, filter={"group": wanted, "n": 1})

    matching = np.array([i for i, g in enumerate(groups) if g == wanted], dtype=np.int64)
    assert [len(row) for row in hits] == [min(top_k, len(matching))] * 2
    assert all(h.payload["group"] == wanted for row in hits for h in row)
    assert_matches_brute_force(hits, matching, vectors[matching], queries, top_k)


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
    store = VectorStore(DIM, "IVF16,Flat", search_params="nprobe=1")
    store.add(np.arange(100), vectors[:100], ["t"] * 100)

    assert not store.is_trained
    assert_matches_brute_force(store.search(queries, 5), np.arange(100), vectors[:100], queries, 5)

    store.add(np.arange(100, 700), vectors[100:], ["t"] * 600)  # 39 per list x 16 lists = 624
    assert store.is_trained


def test_ivf_returns_top_k_when_probed_lists_hold_too_few_matches() -> None:
    vectors = unit_vectors(2000)
    rare = np.arange(0, 2000, 160)  # 13 documents spread over the lists
    store = VectorStore(DIM, "IVF16,Flat", search_params="nprobe=1")
    store.add(np.arange(2000), vectors, ["t"] * 2000, [{"rare": i in rare} for i in range(2000)])
    queries = unit_vectors(5, seed=1)

    hits = store.search(queries, 10, filter={"rare": True})

    assert all(len(row) == 10 for row in hits)
    assert_matches_brute_force(hits, rare, vectors[rare], queries, 10)


def test_filter_distinguishes_booleans_from_integers() -> None:
    store = VectorStore(4)
    store.add([1, 2], np.eye(4, dtype=np.float32)[:2], ["a", "b"], [{"x": True}, {"x": 1}])

    hits = store.search(np.ones((1, 4), np.float32), 5, filter={"x": 1})

    assert [h.id for h in hits[0]] == [2]


def test_get_returns_stored_text_and_payload() -> None:
    store = VectorStore(4)
    store.add([7], np.ones((1, 4)), ["北京欢迎你"], [{"lang": "zh", "tags": ["a", "b"]}])

    assert store.get(7) == Document(7, "北京欢迎你", {"lang": "zh", "tags": ["a", "b"]})
    assert store.get(8) is None


def test_add_of_a_stored_id_raises_and_stores_nothing() -> None:
    store, _ = filled_store(10)

    with pytest.raises(DuplicateIdError, match=r"already stored: \[3\]"):
        store.add([100, 3], unit_vectors(2, seed=1), ["new", "dup"])

    assert len(store) == 10
    assert store.get(100) is None
    assert store.get(3) == Document(3, "doc 3", {"g": 3})


def test_add_with_an_id_repeated_in_the_call_raises() -> None:
    store = VectorStore(4)

    with pytest.raises(DuplicateIdError, match="repeat"):
        store.add([5, 5], np.ones((2, 4)), ["a", "b"])
    assert len(store) == 0


def test_upsert_replaces_vector_text_and_payload() -> None:
    store, vectors = filled_store(50)
    replacement = unit_vectors(1, seed=9)

    store.upsert(
        [4, 50], np.vstack([replacement, replacement]), ["new 4", "new 50"], [{"v": 2}, None]
    )

    assert len(store) == 51
    assert store.get(4) == Document(4, "new 4", {"v": 2})
    assert store.get(50) == Document(50, "new 50", {})
    np.testing.assert_array_equal(store.vectors([4]), replacement)
    top = store.search(replacement, 2)[0]
    assert {h.id for h in top} == {4, 50}
    assert top[0].score == pytest.approx(1.0, abs=1e-5)
    old_hits = store.search(vectors[4:5], 51)[0]
    old_score = {h.id: h.score for h in old_hits}[4]
    assert old_score == pytest.approx(float(replacement[0] @ vectors[4]), abs=1e-5)


def test_delete_returns_how_many_existed() -> None:
    store, _ = filled_store(10)

    assert store.delete([1, 2, 2, 999]) == 2
    assert store.delete([1]) == 0
    assert store.delete([]) == 0
    assert len(store) == 8
    assert store.get(1) is None


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat"])
def test_deleted_documents_never_appear_in_search(factory: str) -> None:
    store, vectors = filled_store(400, factory)
    deleted = np.arange(0, 400, 3)
    for chunk in np.array_split(deleted, 10):  # past the compaction threshold on the way
        store.delete(chunk)
    kept = np.setdiff1d(np.arange(400), deleted)

    hits = store.search(vectors[:20], len(kept))

    assert all(sorted(h.id for h in row) == kept.tolist() for row in hits)


def test_ids_len_vectors_and_iteration_agree() -> None:
    store, vectors = filled_store(30)
    store.delete([0, 29])

    assert len(store) == 28
    np.testing.assert_array_equal(store.ids(), np.arange(1, 29))
    np.testing.assert_array_equal(store.vectors([5, 2]), vectors[[5, 2]])
    pairs = list(store.iter_vectors(batch_size=8))
    assert [i for i, _ in pairs] == list(range(1, 29))
    np.testing.assert_array_equal(np.stack([v for _, v in pairs]), vectors[1:29])


def test_vectors_of_a_missing_id_raise_key_error() -> None:
    store, _ = filled_store(5)

    with pytest.raises(KeyError, match=r"\[9\]"):
        store.vectors([1, 9])


def test_search_on_an_empty_store_returns_no_hits() -> None:
    assert VectorStore(4).search(np.ones((2, 4)), 3) == [[], []]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.add([1], np.ones((1, 5)), ["t"]), r"shape \(n, 4\)"),
        (lambda s: s.add([1], np.ones(4), ["t"]), r"v\[None, :\]"),
        (lambda s: s.add([1], np.full((1, 4), np.nan), ["t"]), "NaN"),
        (lambda s: s.add([-1], np.ones((1, 4)), ["t"]), r"\[0, 2\*\*63 - 1\]"),
        (lambda s: s.add([1.5], np.ones((1, 4)), ["t"]), "integers"),
        (lambda s: s.add([1, 2], np.ones((2, 4)), ["t"]), "2 ids but 1 texts"),
        (lambda s: s.add([1], np.ones((1, 4)), ["t"], [{"x": {1, 2}}]), "JSON"),
        (lambda s: s.search(np.ones((1, 4)), 0), "top_k"),
        (lambda s: s.search(np.ones((1, 3)), 1), r"queries must have shape"),
        (lambda s: s.search(np.array([[np.inf, 0, 0, 0]]), 1), "infinity"),
        (lambda s: s.delete([[1]]), "1-D"),
        (lambda s: s.get(-3), "id must be"),
        (lambda s: s.get(True), "id must be an integer"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(VectorStore(4))


@pytest.mark.parametrize(
    ("factory", "message"), [("Bogus", "cannot build"), ("IDMap2,Flat", "IDMap")]
)
def test_unusable_factory_raises_value_error(factory: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VectorStore(8, factory)


@pytest.mark.parametrize(
    ("factory", "params"), [("Flat", ""), ("IVF16,Flat", "nprobe=4"), ("HNSW16", "")]
)
def test_reopened_store_returns_identical_results(
    tmp_path: Path, factory: str, params: str
) -> None:
    vectors = unit_vectors(1000)
    queries = unit_vectors(20, seed=1)
    store = VectorStore.open(tmp_path / "store", DIM, factory, search_params=params)
    store.add(
        np.arange(1000), vectors, [f"doc {i}" for i in range(1000)], [{"i": i} for i in range(1000)]
    )
    store.delete(np.arange(0, 1000, 7))
    before = store.search(queries, 10)
    store.save()
    store.close()

    with VectorStore.open(tmp_path / "store", DIM, factory, search_params=params) as reopened:
        assert reopened.is_trained
        assert len(reopened) == 1000 - 143
        assert reopened.search(queries, 10) == before


def test_reopen_without_save_rebuilds_from_committed_documents(tmp_path: Path) -> None:
    vectors = unit_vectors(300)
    with VectorStore.open(tmp_path / "store", DIM, "HNSW16") as store:
        store.add(np.arange(200), vectors[:200], ["t"] * 200)
        store.save()
        store.add(np.arange(200, 300), vectors[200:], ["t"] * 100)
        store.delete([0, 1])

    with VectorStore.open(tmp_path / "store", DIM, "HNSW16") as reopened:
        np.testing.assert_array_equal(reopened.ids(), np.arange(2, 300))
        hits = reopened.search(vectors[250:251], 1)
        assert hits[0][0].id == 250


@pytest.mark.parametrize("failing_file", ["index-", "labels-", "snapshot.json"])
def test_crash_during_save_keeps_the_previous_snapshot_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_file: str
) -> None:
    path = tmp_path / "store"
    vectors = unit_vectors(300)
    store = VectorStore.open(path, DIM, "Flat")
    store.add(np.arange(200), vectors[:200], ["t"] * 200)
    store.save()
    previous = json.loads((path / "snapshot.json").read_text())
    store.add(np.arange(200, 300), vectors[200:], ["t"] * 100)
    real_replace = os.replace

    def crashing_replace(source: Any, destination: Any) -> None:
        if Path(destination).name.startswith(failing_file):
            raise OSError("simulated crash")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        store.save()
    monkeypatch.undo()
    store.close()

    assert json.loads((path / "snapshot.json").read_text()) == previous
    assert faiss.read_index(str(path / previous["index"])).ntotal == 200
    assert not [f for f in path.iterdir() if ".tmp-" in f.name]
    with VectorStore.open(path, DIM, "Flat") as reopened:  # documents were committed
        queries = unit_vectors(5, seed=1)
        assert_matches_brute_force(
            reopened.search(queries, 10), np.arange(300), vectors, queries, 10
        )


@pytest.mark.parametrize(("dim", "factory"), [(16, "Flat"), (8, "HNSW16")])
def test_reopen_with_another_dim_or_factory_raises_clear_error(
    tmp_path: Path, dim: int, factory: str
) -> None:
    VectorStore.open(tmp_path / "store", 8, "Flat").close()

    with pytest.raises(StoreMismatchError, match=r"created with dim=8, factory='Flat'"):
        VectorStore.open(tmp_path / "store", dim, factory)


def test_second_open_of_an_open_directory_raises(tmp_path: Path) -> None:
    with VectorStore.open(tmp_path / "store", 8), pytest.raises(StoreLockedError):
        VectorStore.open(tmp_path / "store", 8)


def test_save_of_an_in_memory_store_raises() -> None:
    with pytest.raises(ValueError, match="in memory"):
        VectorStore(4).save()


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_concurrent_search_add_upsert_delete_leave_the_expected_documents(factory: str) -> None:
    store, _ = filled_store(400, factory)
    added = np.arange(1000, 1200)
    upserted = np.arange(200, 300)
    deleted = np.arange(0, 200)
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()
    deadline = time.monotonic() + 20

    def guarded(work: Any) -> Any:
        def run() -> None:
            try:
                work()
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                errors.append(error)

        return threading.Thread(target=run)

    def search() -> None:
        queries = unit_vectors(4, seed=threading.get_ident() % 1000)
        for n in itertools.count():
            if not writing.is_set() or time.monotonic() > deadline:
                return
            for row in store.search(queries, 10, filter={"g": 1} if n % 2 else None):
                assert len(row) <= 10
                assert all(0 <= h.id < 400 or 1000 <= h.id < 1200 for h in row)

    def add() -> None:
        for chunk in np.array_split(added, 200):
            store.add(chunk, unit_vectors(len(chunk), seed=int(chunk[0])), ["added"] * len(chunk))

    def upsert() -> None:
        for chunk in np.array_split(upserted, 100):
            store.upsert(
                chunk, unit_vectors(len(chunk), seed=int(chunk[0])), ["upserted"] * len(chunk)
            )

    def delete() -> None:
        for chunk in np.array_split(deleted, 200):
            store.delete(chunk)

    readers = [guarded(search) for _ in range(2)]
    writers = [guarded(work) for work in (add, upsert, delete)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=30)
    writing.clear()
    for thread in readers:
        thread.join(timeout=30)

    assert not errors
    expected = np.concatenate([np.arange(200, 400), added])
    np.testing.assert_array_equal(store.ids(), expected)
    assert len(store) == len(expected)
    docs = [store.get(i) for i in expected.tolist()]
    assert [doc.id if doc else None for doc in docs] == expected.tolist()
    texts = {doc.id: doc.text for doc in docs if doc}
    assert {texts[i] for i in upserted.tolist()} == {"upserted"}
    assert {texts[i] for i in added.tolist()} == {"added"}
    hits = store.search(unit_vectors(3, seed=5), len(expected))
    assert all(sorted(h.id for h in row) == expected.tolist() for row in hits)


def test_rwlock_lets_readers_share_and_writers_wait() -> None:
    lock = RWLock()
    readers_inside = threading.Barrier(3, timeout=5)  # two readers and this thread
    release_readers = threading.Event()
    writer_in = threading.Event()

    def reader() -> None:
        with lock.read():
            readers_inside.wait()
            release_readers.wait(5)

    def writer() -> None:
        with lock.write():
            writer_in.set()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    readers_inside.wait()  # times out unless both readers hold the lock at once
    threads.append(threading.Thread(target=writer))
    threads[-1].start()

    assert not writer_in.wait(0.2)
    release_readers.set()
    assert writer_in.wait(5)
    for thread in threads:
        thread.join(5)


def test_importing_the_store_lets_batched_flat_search_use_blas() -> None:
    assert baihua.index.store.faiss.cvar.distance_compute_blas_threshold <= 20


@pytest.mark.skipif(HAS_GPU, reason="checks the error on machines without a FAISS GPU")
def test_use_gpu_true_without_a_gpu_raises() -> None:
    with pytest.raises(ValueError, match="use_gpu=True"):
        VectorStore(8, use_gpu=True)


@pytest.mark.skipif(not HAS_GPU, reason="needs a FAISS GPU build and a visible GPU")
@pytest.mark.parametrize(("factory", "params"), [("Flat", ""), ("IVF16,Flat", "nprobe=16")])
def test_gpu_store_equals_brute_force_and_saves_a_cpu_copy(
    tmp_path: Path, factory: str, params: str
) -> None:
    vectors = unit_vectors(2000)
    queries = unit_vectors(20, seed=1)
    store = VectorStore.open(tmp_path / "store", DIM, factory, use_gpu=True, search_params=params)
    store.add(np.arange(2000), vectors, ["t"] * 2000)
    assert store.is_trained
    assert store.on_gpu
    hits = store.search(queries, 10)
    assert_matches_brute_force(hits, np.arange(2000), vectors, queries, 10)
    store.save()
    store.close()

    with VectorStore.open(
        tmp_path / "store", DIM, factory, use_gpu=False, search_params=params
    ) as on_cpu:
        assert not on_cpu.on_gpu
        assert [[h.id for h in row] for row in on_cpu.search(queries, 10)] == [
            [h.id for h in row] for row in hits
        ]
