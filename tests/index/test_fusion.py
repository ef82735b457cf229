"""Fusing a dense and a sparse ranking: RRF and the weighted sum, computed by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baihua.index.fusion import Fusion, fuse

DENSE = [(1, 0.9), (2, 0.8), (3, 0.5)]
SPARSE = [(3, 12.0), (4, 6.0), (1, 2.0)]


def test_rrf_sums_one_over_k_plus_rank_over_both_lists() -> None:
    fused = fuse(DENSE, SPARSE, Fusion("rrf", k=60), top_k=10)
    expected = {
        1: 1 / 61 + 1 / 63,
        2: 1 / 62,
        3: 1 / 63 + 1 / 61,
        4: 1 / 62,
    }
    assert {f.id: f.score for f in fused} == pytest.approx(expected)
    # 1 and 3 tie, 2 and 4 tie: the better dense rank goes first, then the sparse rank
    assert [f.id for f in fused] == [1, 3, 2, 4]


def test_each_result_carries_both_ranks_and_scores() -> None:
    by_id = {f.id: f for f in fuse(DENSE, SPARSE, Fusion(), top_k=10)}
    assert (by_id[3].dense_rank, by_id[3].dense_score) == (3, 0.5)
    assert (by_id[3].sparse_rank, by_id[3].sparse_score) == (1, 12.0)
    assert by_id[2].sparse_rank is None and by_id[2].sparse_score is None
    assert by_id[4].dense_rank is None


def test_weighted_fusion_mixes_min_max_normalised_scores() -> None:
    fused = fuse(DENSE, SPARSE, Fusion("weighted", weight=0.7), top_k=10)
    dense = {1: 1.0, 2: 0.75, 3: 0.0}
    sparse = {3: 1.0, 4: 0.4, 1: 0.0}
    expected = {i: 0.7 * dense.get(i, 0) + 0.3 * sparse.get(i, 0) for i in (1, 2, 3, 4)}
    assert {f.id: f.score for f in fused} == pytest.approx(expected)
    assert [f.id for f in fused] == [1, 2, 3, 4]


def test_weight_one_is_the_dense_ranking_and_zero_the_sparse() -> None:
    assert [f.id for f in fuse(DENSE, SPARSE, Fusion("weighted", weight=1), 3)] == [1, 2, 3]
    assert [f.id for f in fuse(DENSE, SPARSE, Fusion("weighted", weight=0), 2)] == [3, 4]


def test_top_k_cuts_and_one_empty_side_leaves_the_other() -> None:
    assert len(fuse(DENSE, SPARSE, Fusion(), top_k=2)) == 2
    assert [f.id for f in fuse(DENSE, [], Fusion(), top_k=5)] == [1, 2, 3]
    assert [f.id for f in fuse([], SPARSE, Fusion("weighted"), top_k=5)] == [3, 4, 1]


def ranking(scores: st.SearchStrategy[float]) -> st.SearchStrategy[list[tuple[int, float]]]:
    """A best-first list of distinct ids from a small pool, so the two sides overlap, with
    scores from a few values, so fused scores tie."""
    return st.lists(
        st.tuples(st.integers(0, 30), scores), max_size=25, unique_by=lambda h: h[0]
    ).map(lambda hits: sorted(hits, key=lambda h: -h[1]))


@given(
    dense=ranking(st.sampled_from([0.9, 0.5, 0.1])),
    sparse=ranking(st.sampled_from([12.0, 3.0, 0.5])),
    fusion=st.sampled_from([Fusion(), Fusion(k=0), Fusion("weighted"), Fusion("weighted", 0.3)]),
    top_k=st.integers(1, 12),
)
def test_top_k_is_the_head_of_the_whole_fused_ranking(
    dense: list[tuple[int, float]],
    sparse: list[tuple[int, float]],
    fusion: Fusion,
    top_k: int,
) -> None:
    # with top_k above the candidate count nothing is cut before the sort
    assert fuse(dense, sparse, fusion, top_k) == fuse(dense, sparse, fusion, 100)[:top_k]


@pytest.mark.parametrize(
    "fusion", [dict(method="max"), dict(k=-1), dict(method="weighted", weight=1.5)]
)
def test_bad_fusion_settings_are_refused(fusion: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Fusion(**fusion)  # type: ignore[arg-type]
