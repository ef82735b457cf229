"""The index records the EmbeddingSpec of its vectors and refuses to be opened in another space."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from baihua.core.spec import EmbeddingSpec, SpecMismatchError
from baihua.index import FaissStore, StoreMismatchError
from baihua.index.database import read_documents

SPEC = EmbeddingSpec(model="me5-small", weights="a" * 64, pooling="last-avg", max_length=64)
WHITENED = SPEC.with_transform("c" * 64, 8)


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _filled(path: Path, spec: EmbeddingSpec, n: int = 5) -> None:
    with FaissStore.open(path, dim=8, spec=spec) as store:
        store.add(list(range(n)), _unit(n, 8), [f"doc {i}" for i in range(n)])


def test_the_spec_is_recorded_and_read_back(tmp_path: Path) -> None:
    _filled(tmp_path / "s", WHITENED)
    with FaissStore.open(tmp_path / "s", dim=8) as store:
        assert store.spec == WHITENED


@pytest.mark.parametrize(
    ("field", "value"), [("weights", "b" * 64), ("transform", "d" * 64), ("dtype", "bfloat16")]
)
def test_a_store_with_documents_refuses_another_space_naming_the_field(
    tmp_path: Path, field: str, value: str
) -> None:
    _filled(tmp_path / "s", WHITENED)
    with pytest.raises(SpecMismatchError) as raised:
        FaissStore.open(tmp_path / "s", dim=8, spec=dataclasses.replace(WHITENED, **{field: value}))
    assert raised.value.differences == {field: (getattr(WHITENED, field), value)}
    assert f"the index at {tmp_path / 's'} was made in another vector space" in str(raised.value)
    assert "baihua index reembed" in str(raised.value)
    FaissStore.open(tmp_path / "s", dim=8, spec=WHITENED).close()  # the refusal left it usable


def test_a_space_mismatch_is_reported_before_a_dim_mismatch(tmp_path: Path) -> None:
    _filled(tmp_path / "s", WHITENED)
    with pytest.raises(SpecMismatchError, match="n_components 8 → None"):
        FaissStore.open(tmp_path / "s", dim=32, spec=SPEC)


def test_an_empty_store_takes_the_new_space(tmp_path: Path) -> None:
    FaissStore.open(tmp_path / "s", dim=8, spec=WHITENED).close()
    other = dataclasses.replace(WHITENED, transform="d" * 64)
    FaissStore.open(tmp_path / "s", dim=8, spec=other).close()
    with FaissStore.open(tmp_path / "s", dim=8) as store:
        assert store.spec == other


def test_a_failed_open_records_nothing(tmp_path: Path) -> None:
    FaissStore.open(tmp_path / "s", dim=8, spec=WHITENED).close()
    with pytest.raises(StoreMismatchError):
        FaissStore.open(tmp_path / "s", dim=16, spec=SPEC)
    with FaissStore.open(tmp_path / "s", dim=8) as store:
        assert store.spec == WHITENED


def test_a_store_from_before_specs_is_adopted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _filled(tmp_path / "s", WHITENED)
    with sqlite3.connect(tmp_path / "s" / "documents.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'spec'")
    with caplog.at_level(logging.WARNING):
        FaissStore.open(tmp_path / "s", dim=8, spec=WHITENED).close()
    assert "predates vector-space records: taking its 5 vectors to be of" in caplog.text
    with sqlite3.connect(tmp_path / "s" / "documents.sqlite") as db:
        (recorded,) = db.execute("SELECT value FROM meta WHERE key = 'spec'").fetchone()
    assert json.loads(recorded) == WHITENED.to_dict()


def test_documents_can_be_read_while_the_store_is_open(tmp_path: Path) -> None:
    with FaissStore.open(tmp_path / "s", dim=8, spec=SPEC) as store:
        store.add([3, 1, 2], _unit(3, 8), ["c", "a", "b"], [{"k": 3}, None, None])
        pages = list(read_documents(tmp_path / "s" / "documents.sqlite", batch_size=2))
    assert [[d.id for d in page] for page in pages] == [[1, 2], [3]]
    assert (pages[1][0].text, pages[1][0].payload) == ("c", {"k": 3})
