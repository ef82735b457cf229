"""Corruption is detected at open: repaired from the database when it can be, refused when the
database is the part that is missing or wrong; the id counter never hands out an id twice."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from baihua.index import FaissStore, IdsExhaustedError, StoreCorruptError
from tests.index.support import DIM, assert_matches_brute_force, unit_vectors

N = 200


def saved_store(path: Path, factory: str = "Flat") -> np.ndarray:
    vectors = unit_vectors(N)
    with FaissStore.open(path, DIM, factory) as store:
        store.add(np.arange(N), vectors, [f"doc {i}" for i in range(N)])
        store.save()
    return vectors


def manifest(path: Path) -> dict:
    return json.loads((path / "snapshot.json").read_text())


def assert_serves_the_database(path: Path, vectors: np.ndarray) -> None:
    with FaissStore.open(path, DIM, "Flat") as store:
        queries = unit_vectors(10, seed=3)
        assert_matches_brute_force(store.search(queries, 5), np.arange(N), vectors, queries, 5)


def test_snapshots_carry_checksums_generation_and_store_id(tmp_path: Path) -> None:
    saved_store(tmp_path)
    saved = manifest(tmp_path)
    assert saved["generation"] == 1 and len(saved["store_id"]) == 32
    assert set(saved["checksums"]) == {saved["index"], saved["labels"]}


def test_a_bit_flipped_faiss_file_is_detected_and_rebuilt_from_the_database(
    tmp_path: Path,
) -> None:
    vectors = saved_store(tmp_path)
    index_file = tmp_path / manifest(tmp_path)["index"]
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0x40  # one bit in the middle of the vectors
    index_file.write_bytes(bytes(data))
    assert_serves_the_database(tmp_path, vectors)


def test_a_shuffled_labels_file_is_detected_and_rebuilt_from_the_database(
    tmp_path: Path,
) -> None:
    vectors = saved_store(tmp_path)
    labels_file = tmp_path / manifest(tmp_path)["labels"]
    labels = np.load(labels_file)
    np.save(labels_file, np.random.default_rng(0).permutation(labels))
    assert_serves_the_database(tmp_path, vectors)


def test_a_missing_snapshot_file_is_rebuilt_and_the_next_save_writes_a_good_one(
    tmp_path: Path,
) -> None:
    vectors = saved_store(tmp_path)
    (tmp_path / manifest(tmp_path)["index"]).unlink()
    with FaissStore.open(tmp_path, DIM, "Flat") as store:
        store.save()
    assert (tmp_path / manifest(tmp_path)["index"]).is_file()
    assert_serves_the_database(tmp_path, vectors)


def test_a_missing_database_is_refused_and_nothing_is_changed(tmp_path: Path) -> None:
    saved_store(tmp_path)
    for file in tmp_path.glob("documents.sqlite*"):
        file.unlink()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StoreCorruptError, match="documents.sqlite: the database .* is missing"):
        FaissStore.open(tmp_path, DIM, "Flat")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # the last snapshot stays


def test_an_older_database_is_refused(tmp_path: Path) -> None:
    vectors = unit_vectors(N)
    with FaissStore.open(tmp_path / "store", DIM, "Flat") as store:
        store.add(np.arange(100), vectors[:100], ["t"] * 100)
    backup = tmp_path / "backup"
    backup.mkdir()
    for file in (tmp_path / "store").glob("documents.sqlite*"):
        shutil.copy(file, backup / file.name)
    with FaissStore.open(tmp_path / "store", DIM, "Flat") as store:
        store.add(np.arange(100, N), vectors[100:], ["t"] * 100)
        store.save()
    for file in (tmp_path / "store").glob("documents.sqlite*"):
        file.unlink()
    for file in backup.iterdir():
        shutil.copy(file, tmp_path / "store" / file.name)
    with pytest.raises(StoreCorruptError, match=r"older than the index snapshot .* 1 < 2"):
        FaissStore.open(tmp_path / "store", DIM, "Flat")


def test_another_stores_database_is_refused(tmp_path: Path) -> None:
    saved_store(tmp_path / "a")
    saved_store(tmp_path / "b")
    for file in (tmp_path / "a").glob("documents.sqlite*"):
        shutil.copy(file, tmp_path / "b" / file.name)
    with pytest.raises(StoreCorruptError, match="is not the database the index snapshot"):
        FaissStore.open(tmp_path / "b", DIM, "Flat")


def test_deleting_the_manifest_serves_a_refused_database_as_it_is(tmp_path: Path) -> None:
    """The way out the refusal names: the index is rebuilt from the database."""
    vectors = saved_store(tmp_path / "a")
    saved_store(tmp_path / "b")
    for file in (tmp_path / "a").glob("documents.sqlite*"):
        shutil.copy(file, tmp_path / "b" / file.name)
    (tmp_path / "b" / "snapshot.json").unlink()
    assert_serves_the_database(tmp_path / "b", vectors)


def test_a_database_removed_while_open_keeps_the_last_snapshot(tmp_path: Path) -> None:
    vectors = unit_vectors(N)
    store = FaissStore.open(tmp_path, DIM, "Flat")
    store.add(np.arange(100), vectors[:100], ["t"] * 100)
    store.save()
    saved = manifest(tmp_path)
    store.add(np.arange(100, N), vectors[100:], ["t"] * 100)
    (tmp_path / "documents.sqlite").unlink()
    with pytest.raises(StoreCorruptError, match="removed or replaced while the store was open"):
        store.save()
    store.close()
    assert manifest(tmp_path) == saved and (tmp_path / saved["index"]).is_file()


def test_reserved_ids_are_never_handed_out_again_after_deletes_and_reopen(
    tmp_path: Path,
) -> None:
    vectors = unit_vectors(10)
    with FaissStore.open(tmp_path, DIM, "Flat") as store:
        ids = store.reserve_ids(5)
        store.add(ids, vectors[:5], ["t"] * 5)
        store.delete([3, 4])  # the largest ids
        assert ids == [0, 1, 2, 3, 4]
    with FaissStore.open(tmp_path, DIM, "Flat") as store:  # no save: closed like a crash
        assert store.reserve_ids(2) == [5, 6]
        store.add([100], vectors[5:6], ["t"])  # a caller's id moves the counter above it
        assert store.reserve_ids(1, after=200) == [201]
        assert store.reserve_ids(1) == [202]


def test_the_largest_id_is_storable_and_then_ids_are_exhausted(tmp_path: Path) -> None:
    largest = 2**63 - 1
    vectors = unit_vectors(2)
    with FaissStore.open(tmp_path, DIM, "Flat") as store:
        store.add([largest], vectors[:1], ["last"])
        assert store.get(largest).text == "last"
        assert store.search(vectors[:1], 1)[0][0].id == largest
        with pytest.raises(IdsExhaustedError, match="2\\*\\*63 - 1"):
            store.reserve_ids(1)
        store.add([7], vectors[1:], ["still fine"])  # given ids still work
    with FaissStore.open(tmp_path, DIM, "Flat") as store:
        with pytest.raises(IdsExhaustedError):
            store.reserve_ids(1)
        assert store.reserve_ids(0) == []


def test_stores_made_before_the_counter_start_it_above_their_largest_id(tmp_path: Path) -> None:
    vectors = unit_vectors(3)
    with FaissStore.open(tmp_path, DIM, "Flat") as store:
        store.add([4, 9, 2], vectors, ["t"] * 3)
    with sqlite3.connect(tmp_path / "documents.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key IN ('next_id', 'store_id')")
    with FaissStore.open(tmp_path, DIM, "Flat") as store:
        assert store.reserve_ids(1) == [10]
