"""One contract for every engine behind the Store protocol: FAISS over SQLite and Milvus (the
embedded engine, milvus-lite, started here, and the same engine as a server on a loopback port;
``engine`` comes from conftest.py). Exact index types, so searches equal brute force."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baihua.core.spec import EmbeddingSpec, SpecMismatchError
from baihua.index import Document, DuplicateIdError, FilterError, Store, StoreMismatchError
from tests.index.engines import open_engine
from tests.index.support import assert_matches_brute_force, reference_matches, unit_vectors

DIM = 16
REPO = Path(__file__).resolve().parents[2]

OpenStore = Callable[..., Store]


@pytest.fixture
def open_store(engine: str, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens the test's store (again after a close); closes what is left open at the end."""
    opened: list[Store] = []

    def open_(dim: int = DIM, name: str = "store") -> Store:
        store = open_engine(engine, tmp_path / name, dim)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def catalogue(n: int) -> list[dict[str, Any]]:
    langs = ["zh", "en", "fr"]
    return [
        {"lang": langs[i % 3], "price": i % 50, "score": (i % 7) / 2, "draft": i % 4 == 0}
        | ({"tag": "x"} if i % 5 == 0 else {"tag": 1})
        for i in range(n)
    ]


def test_engine_implements_the_store_protocol(open_store: OpenStore) -> None:
    assert isinstance(open_store(), Store)


def test_add_get_count_and_an_all_or_nothing_duplicate(open_store: OpenStore) -> None:
    store = open_store()
    store.add([7, 8], unit_vectors(2, DIM), ["北京欢迎你", "b"], [{"lang": "zh", "t": [1]}, None])

    assert store.get(7) == Document(7, "北京欢迎你", {"lang": "zh", "t": [1]})
    assert store.get(8) == Document(8, "b", {})
    assert store.get(9) is None
    with pytest.raises(DuplicateIdError, match=r"already stored: \[8\]"):
        store.add([100, 8], unit_vectors(2, DIM, seed=1), ["new", "dup"])
    with pytest.raises(DuplicateIdError, match="repeat"):
        store.add([5, 5], unit_vectors(2, DIM), ["a", "b"])
    assert store.get(100) is None
    assert len(store) == store.count() == 2
    assert store.count({"lang": "zh"}) == 1


def test_upsert_replaces_and_delete_counts_what_existed(open_store: OpenStore) -> None:
    store = open_store()
    vectors = unit_vectors(20, DIM)
    store.add(np.arange(20), vectors, [f"doc {i}" for i in range(20)])
    replacement = unit_vectors(1, DIM, seed=9)

    store.upsert(
        [4, 20], np.vstack([replacement, replacement]), ["new 4", "new 20"], [{"v": 2}, None]
    )
    deleted = store.delete([1, 2, 2, 999])

    assert deleted == 2
    assert store.delete([1]) == 0
    assert store.get(4) == Document(4, "new 4", {"v": 2})
    np.testing.assert_allclose(store.vectors([4, 20]), np.vstack([replacement, replacement]))
    np.testing.assert_array_equal(store.ids(), [0, *range(3, 21)])
    top = store.search(replacement, 2)[0]
    assert {h.id for h in top} == {4, 20}
    assert top[0].score == pytest.approx(1.0, abs=1e-5)
    everything = store.search(vectors[1:3], 30)
    assert all({1, 2}.isdisjoint(h.id for h in row) for row in everything)


def test_ids_vectors_and_iteration_agree(open_store: OpenStore) -> None:
    store = open_store()
    vectors = unit_vectors(30, DIM)
    store.add(np.arange(30) * 3, vectors, ["t"] * 30)

    np.testing.assert_array_equal(store.ids(), np.arange(30) * 3)
    np.testing.assert_allclose(store.vectors([6, 0]), vectors[[2, 0]])
    pairs = list(store.iter_vectors(batch_size=8))
    assert [i for i, _ in pairs] == (np.arange(30) * 3).tolist()
    np.testing.assert_allclose(np.stack([v for _, v in pairs]), vectors)
    with pytest.raises(KeyError, match=r"\[1\]"):
        store.vectors([0, 1])


def test_ids_of_a_filter_are_the_matching_documents_ids(open_store: OpenStore) -> None:
    store = open_store()
    store.add(np.arange(30) * 3, unit_vectors(30, DIM), ["t"] * 30, [{"i": i} for i in range(30)])

    np.testing.assert_array_equal(store.ids({"i": {"$gte": 25}}), np.arange(25, 30) * 3)
    np.testing.assert_array_equal(store.ids({"i": {"$gte": 99}}), np.array([], dtype=np.int64))
    np.testing.assert_array_equal(store.ids(), np.arange(30) * 3)


def test_search_equals_brute_force(open_store: OpenStore) -> None:
    store = open_store()
    vectors = unit_vectors(500, DIM)
    store.add(np.arange(500), vectors, ["t"] * 500)
    queries = unit_vectors(8, DIM, seed=1)

    assert_matches_brute_force(store.search(queries, 10), np.arange(500), vectors, queries, 10)
    assert [len(row) for row in open_store(8, "empty").search(np.ones((2, 8)), 3)] == [0, 0]


def test_search_ids_are_the_ids_and_scores_of_search(open_store: OpenStore) -> None:
    store = open_store()
    vectors = unit_vectors(300, DIM)
    store.add(np.arange(300), vectors, ["t"] * 300, catalogue(300))
    queries = unit_vectors(5, DIM, seed=2)

    for filter in [None, {"lang": "zh"}, {"tag": {"$in": []}}]:
        hits = store.search(queries, 12, filter=filter)
        found = store.search_ids(queries, 12, filter=filter)
        assert [[i for i, _ in row] for row in found] == [[h.id for h in row] for row in hits]
        np.testing.assert_allclose(
            [s for row in found for _, s in row], [h.score for row in hits for h in row], rtol=1e-6
        )
        assert all(type(i) is int and type(s) is float for row in found for i, s in row)
    assert open_store(8, "empty").search_ids(np.ones((2, 8)), 3) == [[], []]


FILTERS: list[dict[str, Any]] = [
    {"lang": "zh"},
    {"lang": {"$ne": "zh"}},
    {"price": {"$gte": 10, "$lt": 20}},
    {"score": {"$gt": 1.5}},
    {"lang": {"$in": ["en", "fr"]}},
    {"tag": {"$in": ["x", 1]}},  # mixed kinds in one list
    {"tag": {"$nin": ["x"]}},
    {"draft": True},
    {"draft": {"$ne": True}, "price": {"$lte": 3}},
    {"$or": [{"lang": "fr"}, {"price": {"$lt": 5}}]},
    {"$and": [{"lang": {"$nin": []}}, {"$or": [{"tag": "x"}, {"score": 0}]}]},
    {"price": 1.0},  # a float equals an integer
    {"price": "1"},  # a string equals no number
    {"lang": {"$gt": "en"}},
    {"missing": {"$ne": 1}},
    {"tag": {"$in": []}},
]


@pytest.mark.parametrize("filter", FILTERS, ids=[str(f) for f in FILTERS])
def test_filtered_search_and_count_equal_brute_force_over_matching_documents(
    open_store: OpenStore, filter: dict[str, Any]
) -> None:
    store = open_store()
    payloads = catalogue(300)
    vectors = unit_vectors(300, DIM)
    store.add(np.arange(300), vectors, ["t"] * 300, payloads)
    matching = np.array([i for i, p in enumerate(payloads) if reference_matches(p, filter)], int)
    queries = unit_vectors(4, DIM, seed=1)

    hits = store.search(queries, 10, filter=filter)

    assert store.count(filter) == len(matching)
    assert [len(row) for row in hits] == [min(10, len(matching))] * 4
    if len(matching):
        assert_matches_brute_force(hits, matching, vectors[matching], queries, 10)


@pytest.mark.parametrize(
    "filter", [{"a": {"$regex": "x"}}, {"$or": []}, {"a": None}, {"a": {"$gt": [1]}}]
)
def test_malformed_filters_raise_filter_error(open_store: OpenStore, filter: Any) -> None:
    store = open_store()
    with pytest.raises(FilterError):
        store.search(np.ones((1, DIM)), 1, filter=filter)


def test_documents_and_ids_persist_across_a_process_restart(engine: str, tmp_path: Path) -> None:
    vectors = unit_vectors(200, DIM)
    np.save(tmp_path / "vectors.npy", vectors)
    writer = f"""
import numpy as np
from pathlib import Path
from tests.index.engines import open_engine
store = open_engine({engine!r}, Path({str(tmp_path)!r}), {DIM})
vectors = np.load(Path({str(tmp_path)!r}) / "vectors.npy")
texts, payloads = [f"doc {{i}}" for i in range(200)], [{{"i": i}} for i in range(200)]
store.add(np.arange(0, 400, 2), vectors, texts, payloads)
store.delete([0, 2, 4])
store.upsert([6], vectors[:1], ["replaced"], [{{"i": -1}}])
store.save()
store.close()
"""
    subprocess.run([sys.executable, "-c", writer], cwd=REPO, check=True, timeout=120)

    store = open_engine(engine, tmp_path, DIM)
    try:
        np.testing.assert_array_equal(store.ids(), np.arange(6, 400, 2))
        assert store.get(6) == Document(6, "replaced", {"i": -1})
        assert store.get(8) == Document(8, "doc 4", {"i": 4})
        queries = unit_vectors(5, DIM, seed=1)
        expected = vectors.copy()
        expected[3] = vectors[0]  # id 6 is row 3, replaced by row 0
        ids = np.arange(0, 400, 2)
        assert_matches_brute_force(store.search(queries, 10), ids[3:], expected[3:], queries, 10)
    finally:
        store.close()
    with pytest.raises(StoreMismatchError, match="dim=16"):
        open_engine(engine, tmp_path, 8)


def test_concurrent_search_and_writes_leave_the_expected_documents(open_store: OpenStore) -> None:
    store = open_store()
    store.add(
        np.arange(200), unit_vectors(200, DIM), ["t"] * 200, [{"g": i % 2} for i in range(200)]
    )
    added, deleted = np.arange(1000, 1100), np.arange(0, 100)
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()
    deadline = time.monotonic() + 60

    def guarded(work: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                errors.append(error)

        return threading.Thread(target=run)

    def search() -> None:
        queries = unit_vectors(2, DIM, seed=threading.get_ident() % 1000)
        n = 0
        while writing.is_set() and time.monotonic() < deadline:
            for row in store.search(queries, 10, filter={"g": 1} if n % 2 else None):
                assert len(row) <= 10
                assert all(0 <= h.id < 200 or 1000 <= h.id < 1100 for h in row)
            n += 1

    def add() -> None:
        for chunk in np.array_split(added, 20):
            store.add(
                chunk, unit_vectors(len(chunk), DIM, seed=int(chunk[0])), ["added"] * len(chunk)
            )

    def delete() -> None:
        for chunk in np.array_split(deleted, 20):
            store.delete(chunk)

    readers = [guarded(search) for _ in range(2)]
    writers = [guarded(add), guarded(delete)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=60)
    writing.clear()
    for thread in readers:
        thread.join(timeout=60)

    assert not errors
    expected = np.concatenate([np.arange(100, 200), added])
    np.testing.assert_array_equal(store.ids(), expected)
    assert len(store) == len(expected)


def test_the_vector_space_is_recorded_and_another_refused(engine: str, tmp_path: Path) -> None:
    spec = EmbeddingSpec(model="me5-small", weights="a" * 64, pooling="last-avg", max_length=64)
    other = dataclasses.replace(spec, pooling="cls")
    with open_engine(engine, tmp_path / "empty", DIM, spec) as empty:
        assert empty.spec == spec
    with open_engine(engine, tmp_path / "empty", DIM, other) as retaken:  # empty: takes the new
        assert retaken.spec == other
        retaken.add([1], unit_vectors(1, DIM), ["t"])
    with open_engine(engine, tmp_path / "empty", DIM) as unchecked:
        assert unchecked.spec == other
    with pytest.raises(SpecMismatchError) as raised:
        open_engine(engine, tmp_path / "empty", DIM, spec)
    assert raised.value.differences == {"pooling": ("cls", "last-avg")}


def test_scan_pages_in_id_order_with_a_cursor_and_a_filter(open_store: OpenStore) -> None:
    store = open_store()
    order = np.random.default_rng(0).permutation(230)
    for chunk in np.array_split(order, 5):  # several writes, ids out of order
        store.add(
            chunk,
            unit_vectors(len(chunk), DIM, seed=int(chunk[0])),
            [f"doc {i}" for i in chunk],
            [{"g": int(i) % 5} for i in chunk],
        )
    pages, after = [], -1
    while page := store.scan(after=after, limit=7, filter={"g": 1}):
        pages.append([doc.id for doc in page])
        after = page[-1].id
    assert [i for p in pages for i in p] == list(range(1, 230, 5))
    assert all(len(p) == 7 for p in pages[:-1])
    assert [doc.id for doc in store.scan(limit=3)] == [0, 1, 2]
    assert store.scan(after=100, limit=2)[0] == Document(101, "doc 101", {"g": 1})
    assert store.scan(after=229) == []


def test_get_many_delete_where_and_count(open_store: OpenStore) -> None:
    store = open_store()
    texts, payloads = [f"doc {i}" for i in range(20)], [{"g": i % 5} for i in range(20)]
    store.add(np.arange(20), unit_vectors(20, DIM), texts, payloads)
    assert [doc.id for doc in store.get_many([7, 99, 2])] == [7, 2]
    assert store.get_many([3]) == [Document(3, "doc 3", {"g": 3})]
    assert store.delete_where({"g": 3}) == 4
    assert store.delete_where({"g": 3}) == 0
    assert store.count({"g": 3}) == 0 and len(store) == 16
    hits = store.search(unit_vectors(1, DIM, seed=5), 20)[0]
    assert len(hits) == 16 and not {3, 8, 13, 18} & {hit.id for hit in hits}
    with pytest.raises(FilterError, match="every document"):
        store.delete_where({})


def test_set_payload_keeps_text_and_vector_and_survives_reopen(open_store: OpenStore) -> None:
    store = open_store()
    vectors = unit_vectors(3, DIM)
    store.add([0, 1, 2], vectors, ["a", "b", "c"], [{"v": 1}] * 3)
    assert store.set_payload(1, {"v": 2, "tag": "new"})
    assert not store.set_payload(5, {"v": 2})
    assert store.search(vectors[1:2], 1, {"v": 2})[0][0].id == 1
    assert store.count({"v": 1}) == 2
    store.save()
    store.close()
    again = open_store()
    assert again.get(1) == Document(1, "b", {"v": 2, "tag": "new"})
    np.testing.assert_allclose(again.vectors([1]), vectors[1:2], rtol=1e-6)


def test_reserved_ids_are_never_handed_out_again_after_a_reopen(open_store: OpenStore) -> None:
    store = open_store()
    first = store.reserve_ids(3)
    store.add(first, unit_vectors(3, DIM), ["a", "b", "c"])
    store.add([50], unit_vectors(1, DIM, seed=1), ["given"])
    store.delete([first[-1], 50])  # the largest ids, stored and reserved, gone
    reserved = store.reserve_ids(2)  # reserved only, never written
    store.close()

    store = open_store()
    # FAISS continues its counter; Milvus claims a new range above every claim (the rest of
    # the old one is never used)
    assert store.reserve_ids(1)[0] > reserved[-1]
    assert reserved[0] > 50
