"""Snapshots: a reopened store answers as before, and a crash mid-save loses nothing."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from baihua.index import FaissStore, snapshot
from baihua.index.faiss_index import FaissIndex
from tests.index.support import DIM, assert_matches_brute_force, faiss_search_settings, unit_vectors


@pytest.mark.parametrize(
    ("factory", "params"), [("Flat", ""), ("IVF16,Flat", "nprobe=4"), ("HNSW16", "")]
)
def test_reopened_store_returns_identical_results(
    tmp_path: Path, factory: str, params: str
) -> None:
    vectors = unit_vectors(1000)
    queries = unit_vectors(20, seed=1)
    store = FaissStore.open(tmp_path / "store", DIM, factory, search_params=params)
    store.add(
        np.arange(1000), vectors, [f"doc {i}" for i in range(1000)], [{"i": i} for i in range(1000)]
    )
    store.wait_trained()
    store.delete(np.arange(0, 1000, 7))
    before = store.search(queries, 10)
    store.save()
    store.close()

    with FaissStore.open(tmp_path / "store", DIM, factory, search_params=params) as reopened:
        assert reopened.is_trained
        assert len(reopened) == 1000 - 143
        assert reopened.search(queries, 10) == before


@pytest.mark.parametrize(
    ("factory", "first", "then", "expected"),
    [
        ("HNSW16", "efSearch=64", "efSearch=128,efConstruction=100", (128, 100)),
        ("HNSW16", "efSearch=64,efConstruction=60", "", (384, 200)),  # the store's defaults
        ("IVF16,Flat", "nprobe=4", "nprobe=16", (16,)),
        ("IVF16,Flat", "nprobe=4", "", (1,)),  # FAISS's own, not the nprobe the snapshot kept
    ],
)
def test_a_reopened_store_searches_with_the_search_params_given_now(
    tmp_path: Path, factory: str, first: str, then: str, expected: tuple[int, ...]
) -> None:
    vectors = unit_vectors(1000)
    with FaissStore.open(tmp_path / "store", DIM, factory, search_params=first) as store:
        store.add(np.arange(1000), vectors, ["t"] * 1000)
        assert store.wait_trained()
        store.save()

    with FaissStore.open(tmp_path / "store", DIM, factory, search_params=then) as reopened:
        assert tuple(faiss_search_settings(reopened).values()) == expected
        reopened.add(np.arange(1000, 1100), unit_vectors(100, seed=1), ["t"] * 100)
        assert [hits[0].id for hits in reopened.search(vectors[:5], 1)] == list(range(5))


def test_reopen_without_save_rebuilds_from_committed_documents(tmp_path: Path) -> None:
    vectors = unit_vectors(300)
    with FaissStore.open(tmp_path / "store", DIM, "HNSW16") as store:
        store.add(np.arange(200), vectors[:200], ["t"] * 200)
        store.save()
        store.add(np.arange(200, 300), vectors[200:], ["t"] * 100)
        store.delete([0, 1])

    with FaissStore.open(tmp_path / "store", DIM, "HNSW16") as reopened:
        np.testing.assert_array_equal(reopened.ids(), np.arange(2, 300))
        hits = reopened.search(vectors[250:251], 1)
        assert hits[0][0].id == 250


@pytest.mark.parametrize("failing_file", ["index-", "labels-", "snapshot.json"])
def test_crash_during_save_keeps_the_previous_snapshot_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_file: str
) -> None:
    path = tmp_path / "store"
    vectors = unit_vectors(300)
    store = FaissStore.open(path, DIM, "Flat")
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
    with FaissStore.open(path, DIM, "Flat") as reopened:  # documents were committed
        queries = unit_vectors(5, seed=1)
        assert_matches_brute_force(
            reopened.search(queries, 10), np.arange(300), vectors, queries, 10
        )


def _changes(path: Path) -> int:
    with sqlite3.connect(path / "documents.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM changes").fetchone()[0])


@pytest.mark.parametrize(
    ("factory", "params"), [("Flat", ""), ("IVF16,Flat", "nprobe=16"), ("HNSW16", "")]
)
def test_a_snapshot_behind_the_documents_catches_up_on_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, factory: str, params: str
) -> None:
    path = tmp_path / "store"
    vectors = unit_vectors(1100)
    moved = unit_vectors(50, seed=9)
    with FaissStore.open(path, DIM, factory, search_params=params) as store:
        store.add(np.arange(1000), vectors[:1000], ["t"] * 1000)
        store.save()
        assert _changes(path) == 0  # a save drops the journal it holds
        store.add(np.arange(1000, 1100), vectors[1000:], ["t"] * 100)
        store.upsert(np.arange(50), moved, ["moved"] * 50)
        store.delete(np.arange(900, 930))
        store.set_payload(60, {"patched": True})
        # closed without a save, as a crash leaves it: the snapshot holds the first 1000

    with caplog.at_level(logging.INFO, logger="baihua.index.faiss_store"):
        reopened = FaissStore.open(path, DIM, factory, search_params=params)
    with reopened:
        assert "caught up on 180 documents" in caplog.text
        assert "rebuilding" not in caplog.text
        kept = np.setdiff1d(np.arange(1100), np.arange(900, 930))
        np.testing.assert_array_equal(reopened.ids(), kept)
        expected = vectors.copy()
        expected[:50] = moved
        np.testing.assert_array_equal(reopened.vectors(np.arange(50)), moved)
        hits = reopened.search(expected[kept], 1)
        assert [row[0].id for row in hits] == kept.tolist()
        if factory == "Flat":
            queries = unit_vectors(10, seed=1)
            assert_matches_brute_force(
                reopened.search(queries, 10), kept, expected[kept], queries, 10
            )


def test_writes_a_journal_did_not_see_make_the_index_rebuild(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write by a version that kept no journal (the generation moved, changes_to did not)."""
    path = tmp_path / "store"
    vectors = unit_vectors(200)
    with FaissStore.open(path, DIM, "Flat") as store:
        store.add(np.arange(200), vectors, ["t"] * 200)
        store.save()
    replacement = unit_vectors(1, seed=5)
    with sqlite3.connect(path / "documents.sqlite") as db:
        db.execute(
            "UPDATE documents SET vector = ? WHERE id = 5", (replacement.astype("<f4").tobytes(),)
        )
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    with caplog.at_level(logging.INFO, logger="baihua.index.faiss_store"):
        reopened = FaissStore.open(path, DIM, "Flat")
    with reopened:
        assert "caught up" not in caplog.text
        assert reopened.search(replacement, 1)[0][0].id == 5


def test_payload_writes_and_searches_proceed_while_a_save_copies_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copying, release = threading.Event(), threading.Event()
    cpu_copy = FaissIndex.cpu_copy

    def held(self: FaissIndex) -> Any:
        copying.set()
        assert release.wait(30)
        return cpu_copy(self)

    monkeypatch.setattr(FaissIndex, "cpu_copy", held)
    vectors = unit_vectors(200)
    store = FaissStore.open(tmp_path / "store", DIM, "HNSW16")
    store.add(np.arange(200), vectors, ["t"] * 200, [{"g": 0}] * 200)
    saving = threading.Thread(target=store.save)
    saving.start()
    assert copying.wait(30)

    try:
        assert store.set_payload(7, {"g": 1})  # the index is not touched: no wait for the copy
        assert [h.id for h in store.search(vectors[7:8], 1, filter={"g": 1})[0]] == [7]
    finally:
        release.set()
        saving.join()
    store.close()
    with FaissStore.open(tmp_path / "store", DIM, "HNSW16") as reopened:
        assert reopened.get(7).payload == {"g": 1}


def test_the_index_file_is_synced_in_steps_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not in one flush at the end, which a database commit meanwhile would wait for."""
    synced_sizes: list[int] = []
    fsync = os.fsync

    def watched(fd: int) -> None:
        synced_sizes.append(os.fstat(fd).st_size)
        fsync(fd)

    monkeypatch.setattr(snapshot, "SYNC_EVERY_BYTES", 1 << 20)
    monkeypatch.setattr(os, "fsync", watched)
    vectors = unit_vectors(40_000)  # 5 MB of vectors: FAISS hands them over in 1 MB pieces
    with FaissStore.open(tmp_path / "store", DIM, "Flat") as store:
        store.add(np.arange(40_000), vectors, ["t"] * 40_000)
        synced_sizes.clear()
        store.save()
    monkeypatch.undo()

    size = next((tmp_path / "store").glob("index-*.faiss")).stat().st_size
    assert size > 4 << 20
    steps = [synced for synced in synced_sizes if 1 << 20 <= synced < size]
    assert len(steps) >= size // (1 << 20) - 1
    assert size in synced_sizes  # and once whole
    with FaissStore.open(tmp_path / "store", DIM, "Flat") as reopened:  # checksums hold
        assert [h.id for h in reopened.search(vectors[3:4], 1)[0]] == [3]
