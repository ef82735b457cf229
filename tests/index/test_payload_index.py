"""The payload index follows every write, and a database from before it is indexed on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from baihua.index import FaissStore
from tests.index.support import unit_vectors


def test_upsert_and_delete_keep_the_payload_index_in_step() -> None:
    store = FaissStore(4)
    store.add([1, 2, 3], unit_vectors(3, 4), ["t"] * 3, [{"g": "a"}, {"g": "a"}, {"g": "b"}])

    store.upsert([1], unit_vectors(1, 4), ["t"], [{"g": "b"}])
    store.delete([3])

    assert store.count({"g": "a"}) == 1
    assert store.count({"g": "b"}) == 1
    assert [h.id for h in store.search(np.ones((1, 4)), 5, filter={"g": "b"})[0]] == [1]
    assert store.count() == len(store) == 2


def test_a_database_without_the_payload_index_is_indexed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with FaissStore.open(path, 4) as store:
        store.add(np.arange(10), unit_vectors(10, 4), ["t"] * 10, [{"n": i} for i in range(10)])
    with sqlite3.connect(path / "documents.sqlite") as db:  # as written before the index existed
        db.execute("DROP TABLE fields")

    with FaissStore.open(path, 4) as reopened:
        assert reopened.count({"n": {"$gte": 7}}) == 3
