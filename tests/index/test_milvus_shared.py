"""Several processes on one collection of a Milvus server (replicas of the service, Ray
workers): each opens its own ``MilvusStore``. Ids reserved by any of them never meet, explicit
ids are never reserved later, and one id never has two rows."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from baihua.index.errors import DuplicateIdError
from baihua.index.milvus_store import MilvusStore
from tests.index.support import unit_vectors

DIM = 8
Open = Callable[[], MilvusStore]


@pytest.fixture
def open_replica(milvus_server: str) -> Iterator[Open]:
    """Opens one more store on the test's collection (as another process would)."""
    collection = f"shared_{uuid.uuid4().hex}"
    opened: list[MilvusStore] = []

    def open_() -> MilvusStore:
        opened.append(MilvusStore(milvus_server, DIM, collection=collection))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


def run_together(*work: Callable[[], object]) -> list[object]:
    """Each callable in its own thread, released at the same moment; their results."""
    start = threading.Barrier(len(work))
    results: list[object] = [None] * len(work)

    def run(i: int) -> None:
        start.wait()
        results[i] = work[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_ids_reserved_by_three_stores_at_once_never_meet(open_replica: Open) -> None:
    stores = [open_replica() for _ in range(3)]

    def reserve(store: MilvusStore) -> Callable[[], list[int]]:
        return lambda: [i for _ in range(20) for i in store.reserve_ids(100)]

    reserved = run_together(*(reserve(store) for store in stores))
    ids = [i for part in reserved for i in part]  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids)) == 6000


def test_a_store_opened_later_reserves_above_every_store_before_it(open_replica: Open) -> None:
    first, second = open_replica(), open_replica()
    taken = first.reserve_ids(3) + second.reserve_ids(3)
    first.add([5000], unit_vectors(1, DIM), ["given"])
    assert min(open_replica().reserve_ids(1)) > max(taken + [5000])


def test_an_explicit_id_above_every_claim_is_never_reserved_later(open_replica: Open) -> None:
    first, second = open_replica(), open_replica()
    first.reserve_ids(1)
    given = 10_000
    second.add([given], unit_vectors(1, DIM), ["given"])
    assert given not in first.reserve_ids(20_000)  # past its own range: a new claim


def test_the_same_id_added_through_two_stores_at_once_is_one_document(open_replica: Open) -> None:
    first, second = open_replica(), open_replica()
    vectors = unit_vectors(2 * 50, DIM)

    def add(store: MilvusStore, offset: int) -> Callable[[], int]:
        def work() -> int:
            refused = 0
            for i in range(50):
                try:
                    store.add([i], vectors[offset + i : offset + i + 1], [f"{offset} {i}"])
                except ValueError:  # DuplicateIdError: the other store was first, and seen
                    refused += 1
            return refused

        return work

    run_together(add(first, 0), add(second, 50))
    for store in (first, second):
        assert store.count() == len(store.ids()) == len(set(store.ids().tolist())) == 50
        assert {d.text.split()[1] for d in store.get_many(list(range(50)))} == {
            str(i) for i in range(50)
        }


def test_the_same_ids_upserted_through_two_stores_at_once_are_one_row_each(
    open_replica: Open,
) -> None:
    first, second = open_replica(), open_replica()
    vectors = unit_vectors(2 * 50, DIM)

    def upsert(store: MilvusStore, offset: int) -> Callable[[], None]:
        def work() -> None:
            for i in range(50):
                store.upsert([i], vectors[offset + i : offset + i + 1], [f"{offset} {i}"])

        return work

    run_together(upsert(first, 0), upsert(second, 50))
    for store in (first, second):
        assert store.count() == len(store.ids()) == len(set(store.ids().tolist())) == 50


def test_an_id_handed_out_by_one_store_is_upserted_by_another_only_after_it_is_written(
    open_replica: Open,
) -> None:
    first, second = open_replica(), open_replica()
    (id,) = first.reserve_ids(1)
    vectors = unit_vectors(2, DIM)
    given = threading.Thread(target=lambda: second.upsert([id], vectors[1:], ["given"]))
    given.start()
    given.join(timeout=1.0)
    assert given.is_alive(), "the upsert waits while the id is handed out and not written"
    first.add([id], vectors[:1], ["automatic"])
    given.join(timeout=30)
    assert not given.is_alive()
    assert [d.text for d in first.get_many([id])] == ["given"]
    assert first.count() == 1


def test_an_id_handed_out_by_one_store_cannot_be_added_by_another(open_replica: Open) -> None:
    first, second = open_replica(), open_replica()
    (id,) = first.reserve_ids(1)
    vectors = unit_vectors(2, DIM)
    refused: list[BaseException] = []

    def add() -> None:
        try:
            second.add([id], vectors[1:], ["given"])
        except DuplicateIdError as error:
            refused.append(error)

    given = threading.Thread(target=add)
    given.start()
    given.join(timeout=1.0)
    first.add([id], vectors[:1], ["automatic"])
    given.join(timeout=30)
    assert len(refused) == 1
    assert [d.text for d in second.get_many([id])] == ["automatic"]


def test_a_replica_waits_for_the_index_of_a_collection_another_is_creating(
    milvus_server: str,
) -> None:
    """Milvus makes a collection, then its index: a replica opening in between must wait for
    the index, not fail (two servers starting together hit it)."""
    collection = f"shared_{uuid.uuid4().hex}"
    first = MilvusStore(milvus_server, DIM, collection=collection)
    client = first._client
    client.release_collection(collection)
    client.drop_index(collection, "vector")  # as it is before the creator adds the index

    def index_later() -> None:
        time.sleep(0.5)
        index = client.prepare_index_params()
        index.add_index(
            "vector", index_type=first.index_type, metric_type="IP", params=first.index_params
        )
        client.create_index(collection, index)
        client.load_collection(collection)

    creator = threading.Thread(target=index_later)
    creator.start()
    second = MilvusStore(milvus_server, DIM, collection=collection)
    creator.join()
    try:
        second.add([7], unit_vectors(1, DIM, seed=3), ["after"])
        assert second.count() == 1
    finally:
        second.close()
        first.close()
