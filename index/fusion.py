"""Fusing a dense and a sparse ranking into one: reciprocal-rank fusion, or a weighted sum of
normalised scores.

- RRF (Cormack et al. 2009): ``score(d) = Σ_lists 1 / (k + rank(d))`` with ranks from 1; a
  document missing from a list gets nothing from it. Needs no score calibration; ``k = 60`` is
  the paper's and every vector database's default.
- Weighted: each list's scores are min-max normalised to [0, 1] over that list's candidates
  (BM25 scores are unbounded, cosines are not), then ``weight · dense + (1 − weight) · sparse``;
  a document missing from a list gets 0 from it.

Ties are broken by the better dense rank, then the better sparse rank, then the id, so a fused
ranking is deterministic.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

METHODS = ("rrf", "weighted")
DEFAULT_RRF_K = 60
DEFAULT_WEIGHT = 0.5


@dataclass(frozen=True)
class Fused:
    """One fused result: its fused score and, per side, its 1-based rank and score (None when
    that side did not return it)."""

    id: int
    score: float
    dense_rank: int | None
    dense_score: float | None
    sparse_rank: int | None
    sparse_score: float | None


@dataclass(frozen=True)
class Fusion:
    """How to fuse: ``method`` "rrf" (with ``k``) or "weighted" (with the dense ``weight``)."""

    method: str = "rrf"
    k: float = DEFAULT_RRF_K
    weight: float = DEFAULT_WEIGHT

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"fusion method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.k < 0:
            raise ValueError(f"rrf k must be >= 0; got {self.k}")
        if not 0 <= self.weight <= 1:
            raise ValueError(f"fusion weight must be in [0, 1]; got {self.weight}")

    @property
    def name(self) -> str:
        return f"rrf-{self.k:g}" if self.method == "rrf" else f"weighted-{self.weight:g}"


def fuse(
    dense: Sequence[tuple[int, float]],
    sparse: Sequence[tuple[int, float]],
    fusion: Fusion,
    top_k: int,
) -> list[Fused]:
    """The ``top_k`` best of two rankings (each a best-first list of (id, score)), fused.

    Scores are plain floats, ties are ordered only among candidates that can make the ``top_k``,
    and only those kept become `Fused`: a hybrid search fuses up to 2 x 50 candidates per query
    to keep 10, on the request's path."""
    dense_at = {i: (rank, s) for rank, (i, s) in enumerate(dense, start=1)}
    sparse_at = {i: (rank, s) for rank, (i, s) in enumerate(sparse, start=1)}
    if fusion.method == "rrf":
        scores = {i: 1.0 / (fusion.k + rank) for i, (rank, _) in dense_at.items()}
        for i, (rank, _) in sparse_at.items():
            scores[i] = scores.get(i, 0.0) + 1.0 / (fusion.k + rank)
    else:
        scores = {i: fusion.weight * v for i, v in _normalised(dense).items()}
        for i, v in _normalised(sparse).items():
            scores[i] = scores.get(i, 0.0) + (1 - fusion.weight) * v
    if len(scores) > top_k:  # only candidates scoring at least the k-th best can be kept
        threshold = heapq.nlargest(top_k, scores.values())[-1]
        scores = {i: score for i, score in scores.items() if score >= threshold}
    missing = (math.inf, None)
    best = sorted(
        (-score, dense_at.get(i, missing)[0], sparse_at.get(i, missing)[0], i)
        for i, score in scores.items()
    )[:top_k]
    return [
        Fused(
            i,
            -negated,
            *dense_at.get(i, (None, None)),
            *sparse_at.get(i, (None, None)),
        )
        for negated, _, _, i in best
    ]


def _normalised(ranking: Sequence[tuple[int, float]]) -> dict[int, float]:
    """Min-max over the list; all equal scores (or one result) map to 1."""
    if not ranking:
        return {}
    scores = [s for _, s in ranking]
    low, high = min(scores), max(scores)
    span = high - low
    return {i: 1.0 if span == 0 else (s - low) / span for i, s in ranking}
