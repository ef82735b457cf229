"""Payload filters."""

from __future__ import annotations

import numpy as np

from baihua.index import FaissStore


def test_filter_distinguishes_booleans_from_integers() -> None:
    store = FaissStore(4)
    store.add([1, 2], np.eye(4, dtype=np.float32)[:2], ["a", "b"], [{"x": True}, {"x": 1}])

    hits = store.search(np.ones((1, 4), np.float32), 5, filter={"x": 1})

    assert [h.id for h in hits[0]] == [2]
