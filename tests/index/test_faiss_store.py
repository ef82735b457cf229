"""FaissStore: document semantics, flat search against brute force, one owner per directory,
thread safety."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baihua.index import (
    Document,
    DuplicateIdError,
    FaissStore,
    Store,
    StoreLockedError,
    StoreMismatchError,
)
from tests.index.support import assert_matches_brute_force, filled_store, unit_vectors

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
    store = FaissStore(dim)
    store.add(ids, vectors, ["t"] * n)

    hits = store.search(queries, top_k)

    assert [len(row) for row in hits] == [min(top_k, n)] * 3
    assert_matches_brute_force(hits, ids, vectors, queries, top_k)


def test_get_returns_stored_text_and_payload() -> None:
    store = FaissStore(4)
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
    store = FaissStore(4)

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
    assert FaissStore(4).search(np.ones((2, 4)), 3) == [[], []]


@pytest.mark.parametrize(("dim", "factory"), [(16, "Flat"), (8, "HNSW16")])
def test_reopen_with_another_dim_or_factory_raises_clear_error(
    tmp_path: Path, dim: int, factory: str
) -> None:
    FaissStore.open(tmp_path / "store", 8, "Flat").close()

    with pytest.raises(StoreMismatchError, match=r"created with dim=8, factory='Flat'"):
        FaissStore.open(tmp_path / "store", dim, factory)


def test_second_open_of_an_open_directory_raises(tmp_path: Path) -> None:
    with FaissStore.open(tmp_path / "store", 8), pytest.raises(StoreLockedError):
        FaissStore.open(tmp_path / "store", 8)


def test_save_of_an_in_memory_store_raises() -> None:
    with pytest.raises(ValueError, match="in memory"):
        FaissStore(4).save()


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


def test_faiss_store_implements_the_store_protocol() -> None:
    assert isinstance(FaissStore(4), Store)
