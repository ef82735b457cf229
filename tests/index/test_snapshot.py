"""Snapshots: a reopened store answers as before, and a crash mid-save loses nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from baihua.index import FaissStore
from tests.index.support import DIM, assert_matches_brute_force, unit_vectors


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
    store.delete(np.arange(0, 1000, 7))
    before = store.search(queries, 10)
    store.save()
    store.close()

    with FaissStore.open(tmp_path / "store", DIM, factory, search_params=params) as reopened:
        assert reopened.is_trained
        assert len(reopened) == 1000 - 143
        assert reopened.search(queries, 10) == before


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
