"""The id -> position map over an index's labels: appends, deletes, ids appended again."""

from __future__ import annotations

import numpy as np
import pytest

from baihua.index import positions
from baihua.index.positions import PositionMap


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_find_follows_appends_deletes_and_ids_appended_again() -> None:
    index = PositionMap(ids(10, -1, 30))
    index.append(ids(40, 50))
    index.kill(ids(30))
    index.append(ids(30))  # an upsert: the old position dead, the id at a new one

    assert index.find(ids(10, 20, 30, 40, 50, -1)).tolist() == [0, -1, 5, 3, 4, -1]
    assert len(index) == 4
    assert 30 in index
    assert 20 not in index
    assert index.labels.tolist() == [10, -1, -1, 40, 50, 30]


def test_kill_of_an_id_not_stored_raises_and_changes_nothing() -> None:
    index = PositionMap(ids(1, 2))

    with pytest.raises(KeyError):
        index.kill(ids(1, 3))

    assert len(index) == 2
    assert index.labels.tolist() == [1, 2]


def test_lookups_agree_with_a_dict_across_resorts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(positions, "_RECENT_UP_TO", 16)  # re-sort often
    rng = np.random.default_rng(0)
    index, expected = PositionMap(), {}
    for _ in range(200):
        new = np.setdiff1d(rng.integers(0, 500, size=8), list(expected))
        index.append(new)
        expected |= {int(i): len(index.labels) - len(new) + k for k, i in enumerate(new)}
        gone = rng.choice(list(expected), size=3, replace=False)
        index.kill(gone.astype(np.int64))
        for i in gone.tolist():
            del expected[i]

    probe = np.arange(-5, 505, dtype=np.int64)
    assert index.find(probe).tolist() == [expected.get(i, -1) for i in probe.tolist()]
    assert len(index) == len(expected)
