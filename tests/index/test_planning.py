"""Filtered search returns the brute-force top k over the matching documents."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from baihua.index import FaissStore
from tests.index.support import DIM, assert_matches_brute_force, unit_vectors

coordinates = st.floats(-1, 1, width=32)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_filtered_flat_search_equals_brute_force_over_matching_documents(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(1, 40), label="n")
    vectors = data.draw(hnp.arrays(np.float32, (n, 8), elements=coordinates), label="vectors")
    queries = data.draw(hnp.arrays(np.float32, (2, 8), elements=coordinates), label="queries")
    groups = data.draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n), label="groups")
    wanted = data.draw(st.sampled_from("abc"), label="wanted")
    top_k = data.draw(st.integers(1, n + 2), label="top_k")
    store = FaissStore(8)
    store.add(np.arange(n), vectors, ["t"] * n, [{"group": g, "n": 1} for g in groups])

    hits = store.search(queries, top_k, filter={"group": wanted, "n": 1})

    matching = np.array([i for i, g in enumerate(groups) if g == wanted], dtype=np.int64)
    assert [len(row) for row in hits] == [min(top_k, len(matching))] * 2
    assert all(h.payload["group"] == wanted for row in hits for h in row)
    assert_matches_brute_force(hits, matching, vectors[matching], queries, top_k)


def test_ivf_returns_top_k_when_probed_lists_hold_too_few_matches() -> None:
    vectors = unit_vectors(2000)
    rare = np.arange(0, 2000, 160)  # 13 documents spread over the lists
    store = FaissStore(DIM, "IVF16,Flat", search_params="nprobe=1")
    store.add(np.arange(2000), vectors, ["t"] * 2000, [{"rare": i in rare} for i in range(2000)])
    queries = unit_vectors(5, seed=1)

    hits = store.search(queries, 10, filter={"rare": True})

    assert all(len(row) == 10 for row in hits)
    assert_matches_brute_force(hits, rare, vectors[rare], queries, 10)
