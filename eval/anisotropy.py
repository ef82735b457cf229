"""Cosines of sentence pairs before and after a transform: the data of the anisotropy picture.

Raw BERT-family vectors crowd into a narrow cone, so even random pairs of sentences score high
cosines; a fitted whitening spreads them around 0. What matters for STS and search is whether
paraphrase pairs stay apart from non-paraphrase pairs, which `separation` measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from baihua.core.errors import UsageError
from baihua.core.progress import Progress
from baihua.encoder import Encoder
from baihua.eval.datasets import load_task
from baihua.eval.report import markdown_table
from baihua.eval.sts import StsEval, pair_cosines
from baihua.eval.transforms import TransformSpec, parse_transform

PAIR_KINDS = ("random", "paraphrase", "non-paraphrase")


@dataclass
class PairCosines:
    """Cosines per kind of pair (`PAIR_KINDS`) under one transform."""

    transform: str
    cosines: dict[str, np.ndarray]

    def separation(self) -> float:
        """P(a paraphrase pair scores above a non-paraphrase pair): ROC AUC, ties count half."""
        return roc_auc(self.cosines["paraphrase"], self.cosines["non-paraphrase"])


def summary_table(results: Sequence[PairCosines]) -> str:
    """Markdown: mean cosine per kind of pair and the separation, a row per transform."""
    header = ["transform", *(f"mean cos {kind}" for kind in PAIR_KINDS), "separation (AUC)"]
    rows = [
        [r.transform, *(f"{round(r.cosines[kind].mean(), 3) + 0.0:.3f}" for kind in PAIR_KINDS)]
        + [f"{r.separation():.3f}"]
        for r in results
    ]
    return markdown_table(header, rows)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Mann–Whitney U of the two samples divided by the number of (positive, negative) pairs."""
    ranks = rankdata(np.concatenate([positive, negative]))
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def label_bands(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of paraphrase pairs (top fifth of the label range: 1 of 0/1, ≥ 4 of 0–5) and of
    non-paraphrase pairs (bottom fifth: 0, ≤ 1)."""
    low, high = float(labels.min()), float(labels.max())
    if high == low:
        raise UsageError(f"every pair has label {low}: no paraphrase / non-paraphrase split")
    return labels >= low + 0.8 * (high - low), labels <= low + 0.2 * (high - low)


def random_pair_cosines(vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Cosines of `n` random pairs of distinct rows."""
    first = rng.integers(0, len(vectors), n)
    second = (first + rng.integers(1, len(vectors), n)) % len(vectors)
    return pair_cosines(vectors[first], vectors[second])


def split_cosines(
    text1: np.ndarray, text2: np.ndarray, labels: np.ndarray, n_random: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """The three kinds of pair of one scored split, from its (already transformed) vectors."""
    paraphrase, other = label_bands(labels)
    cosines = pair_cosines(text1, text2)
    sentences = np.concatenate([text1, text2])
    return {
        "random": random_pair_cosines(sentences, n_random, np.random.default_rng(seed)),
        "paraphrase": cosines[paraphrase],
        "non-paraphrase": cosines[other],
    }


def anisotropy(
    encoder: Encoder,
    *,
    data_dir: Path,
    task: str,
    transforms: Sequence[TransformSpec],
    cache_dir: Path,
    pooling: str | None = None,
    split: str = "test",
    fit_on: str | list[str] = "task",
    max_length: int | None = None,
    n_random: int = 5000,
    progress: Progress | None = None,
) -> list[PairCosines]:
    """Pair cosines of `split` of `task` raw and under each transform (fitted as `baihua eval`
    fits them, vectors through its cache)."""
    pooling = pooling or encoder.pooling
    specs = [parse_transform("none"), *(t for t in transforms if t.method != "none")]
    grid = StsEval(
        data_dir=data_dir,
        tasks=[task],
        poolings=[pooling],
        transforms=specs,
        cache_dir=cache_dir,
        fit_on=fit_on,
        splits=[split],
        max_length=max_length,
        progress=progress,
    )
    loaded = load_task(data_dir, task)
    grid.check_splits(loaded)
    vectors = grid.vectors(encoder, loaded)[pooling]
    labels = np.asarray(loaded.splits[split].labels)
    out = []
    for spec in specs:
        a, b = vectors[f"{split}.1"], vectors[f"{split}.2"]
        transform = grid.fitted(encoder, task, pooling, spec, vectors)
        if transform is not None:
            a, b = transform.transform(a), transform.transform(b)
        out.append(PairCosines(spec.name, split_cosines(a, b, labels, n_random)))
    return out
