"""The BERT-whitening STS evaluation: Spearman between cosine and label, for a grid of
models × poolings × transforms, each distinct sentence encoded once."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from baihua.core.errors import UsageError
from baihua.core.progress import Progress
from baihua.encoder import Encoder, encoder_spec, l2_normalize
from baihua.eval.cache import VectorCache
from baihua.eval.datasets import SPLITS, StsTask, load_task
from baihua.eval.transforms import TransformSpec, fit_transform
from baihua.whitening import Moments, Transform, read_metadata

# The paper's token limits: 64, and 128 for PAWSX's long sentences.
PAPER_MAX_LENGTHS = {"PAWSX": 128}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the ranks, ties getting their average rank."""
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx * rx).sum() * (ry * ry).sum()))


def pair_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (l2_normalize(a) * l2_normalize(b)).sum(axis=1)


@dataclass
class StsResult:
    model: str
    pooling: str
    transform: str
    split: str
    backend: str = "torch"
    dtype: str = "float32"
    scores: dict[str, float] = field(default_factory=dict)  # task → Spearman × 100
    sizes: dict[str, int] = field(default_factory=dict)  # task → pairs
    fit_seconds: dict[str, float] = field(default_factory=dict)  # task → transform fit time
    dim: int = 0  # dimensions of the transformed vectors


FitOn = str | list[str]
Fitted = dict[str, tuple[Transform | None, float]]  # transform name → (fitted, fit seconds)


def fit_splits(fit_on: str) -> list[str] | None:
    """The splits a ``fit_on`` like "test" or "train+valid" names; None for anything else."""
    names = fit_on.split("+")
    return names if all(name in SPLITS for name in names) else None


@dataclass
class StsEval:
    """One grid. ``fit_on`` says which sentences (never labels) the transforms are fitted on:
    "task" (every split of the task, as the paper), "all-tasks" (every sentence of every task
    in the grid, each encoded as in its own task, fitted once), splits joined by "+" ("test",
    "train+valid": those the task has), or a list of corpus sentences."""

    data_dir: Path
    tasks: Sequence[str]
    poolings: Sequence[str]
    transforms: Sequence[TransformSpec]
    cache_dir: Path
    fit_on: FitOn = "task"
    splits: Sequence[str] = ("test",)
    max_length: int | None = None  # None: an artifact row's limit, else the paper's
    progress: Progress | None = None

    def __post_init__(self) -> None:
        named = isinstance(self.fit_on, str) and self.fit_on not in ("task", "all-tasks")
        if named and fit_splits(self.fit_on) is None:  # type: ignore[arg-type]
            raise UsageError(
                f"fit_on {self.fit_on!r}: use task, all-tasks, splits joined by '+' "
                f"({', '.join(SPLITS)}) or a list of sentences"
            )

    def run(self, encoder: Encoder) -> list[StsResult]:
        results = {
            (p, t.name, s): StsResult(encoder.name, p, t.name, s, encoder.backend, encoder.dtype)
            for p in self.poolings
            for t in self.transforms
            for s in self.splits
        }
        loaded = [load_task(self.data_dir, name) for name in self.tasks]
        for task in loaded:
            self.check_splits(task)
        if self.fit_on == "all-tasks":
            every = {task.name: self.vectors(encoder, task) for task in loaded}
            shared = {
                pooling: self._fit_grid(
                    np.concatenate([every[t.name][pooling]["fit"] for t in loaded])
                )
                for pooling in self.poolings
            }
            for task in loaded:
                for pooling in self.poolings:
                    own = every[task.name][pooling]
                    self._score_task(encoder, task, pooling, own, shared[pooling], results)
            return list(results.values())
        for task in loaded:
            vectors = self.vectors(encoder, task)
            for pooling in self.poolings:
                fitted = self._fit_grid(vectors[pooling]["fit"])
                self._score_task(encoder, task, pooling, vectors[pooling], fitted, results)
        return list(results.values())

    def _fit_grid(self, fit_vectors: np.ndarray) -> Fitted:
        """Every transform of the grid fitted on ``fit_vectors``; the eigendecomposition rows
        share one pass of moments (its time is split evenly among them)."""
        shared = [spec for spec in self.transforms if spec.fits_moments]
        moments, moments_seconds = None, 0.0
        if shared:
            started = time.perf_counter()
            moments = Moments.empty(fit_vectors.shape[1])
            moments.update(fit_vectors)
            moments_seconds = (time.perf_counter() - started) / len(shared)
        fitted: Fitted = {}
        for spec in self.transforms:
            started = time.perf_counter()
            transform = fit_transform(spec, fit_vectors, moments if spec.fits_moments else None)
            seconds = time.perf_counter() - started
            if spec.fits_moments:
                seconds += moments_seconds
            fitted[spec.name] = (transform, seconds)
        return fitted

    def _score_task(
        self,
        encoder: Encoder,
        task: StsTask,
        pooling: str,
        vectors: dict[str, np.ndarray],
        fitted: Fitted,
        results: dict[tuple[str, str, str], StsResult],
    ) -> None:
        space = encoder_spec(encoder, pooling=pooling, max_length=self._max_length(task.name))
        for name, (transform, fit_seconds) in fitted.items():
            if transform is not None:
                transform.check_compatible(space)
            dim = transform.n_components_ if transform is not None else vectors["fit"].shape[1]
            for split in self.splits:
                result = results[(pooling, name, split)]
                result.scores[task.name] = self._score(task, split, vectors, transform)
                result.sizes[task.name] = len(task.splits[split])
                result.fit_seconds[task.name] = fit_seconds
                result.dim = dim

    def fitted(
        self,
        encoder: Encoder,
        task: str,
        pooling: str,
        spec: TransformSpec,
        vectors: dict[str, np.ndarray],
    ) -> Transform | None:
        """`spec` fitted on the "fit" part of `vectors` (an artifact loaded), checked against the
        space the vectors came from."""
        transform = fit_transform(spec, vectors["fit"])
        if transform is not None:
            space = encoder_spec(encoder, pooling=pooling, max_length=self._max_length(task))
            transform.check_compatible(space)
        return transform

    def check_splits(self, task: StsTask) -> None:
        for split in self.splits:
            if split not in task.splits:
                raise UsageError(f"task {task.name} has no {split} split")

    def _max_length(self, task: str) -> int:
        """The limit asked for; else a saved artifact's own (it was fitted at that limit, so the
        whole table is encoded at it); else the paper's."""
        if self.max_length:
            return self.max_length
        for spec in self.transforms:
            if spec.method == "artifact":
                assert spec.path is not None
                return int(read_metadata(spec.path).spec["max_length"])
        return PAPER_MAX_LENGTHS.get(task, 64)

    def vectors(self, encoder: Encoder, task: StsTask) -> dict[str, dict[str, np.ndarray]]:
        """pooling → {"<split>.1", "<split>.2", "fit"} → vectors, through the vector cache."""
        max_length = self._max_length(task.name)
        cache = VectorCache(
            self.cache_dir,
            encoder_spec(encoder, max_length=max_length),
            text_type="query",
            variant=encoder.variant,
        )

        def encode(texts: list[str], poolings: list[str]) -> dict[str, np.ndarray]:
            encoded = encoder.encode_poolings(
                texts, poolings, max_length=max_length, progress=self.progress
            )
            return encoded.vectors

        fit_texts = self._fit_texts(task)
        wanted = [t for s in self.splits for t in task.splits[s].texts()] + fit_texts
        flat = cache.get(wanted, self.poolings, encode)
        out: dict[str, dict[str, np.ndarray]] = {}
        for pooling, matrix in flat.items():
            parts, start = {}, 0
            for split in self.splits:
                n = len(task.splits[split])
                parts[f"{split}.1"] = matrix[start : start + n]
                parts[f"{split}.2"] = matrix[start + n : start + 2 * n]
                start += 2 * n
            parts["fit"] = matrix[start:]
            out[pooling] = parts
        return out

    def _fit_texts(self, task: StsTask) -> list[str]:
        if isinstance(self.fit_on, list):
            return self.fit_on
        if self.fit_on in ("task", "all-tasks"):
            return task.texts()
        names = fit_splits(self.fit_on) or []
        texts = [t for name in names if name in task.splits for t in task.splits[name].texts()]
        if not texts:
            raise UsageError(
                f"task {task.name} has none of the splits {self.fit_on!r} to fit on "
                f"(it has {', '.join(task.splits)})"
            )
        return texts

    def _score(
        self,
        task: StsTask,
        split: str,
        vectors: dict[str, np.ndarray],
        transform: Transform | None,
    ) -> float:
        a, b = vectors[f"{split}.1"], vectors[f"{split}.2"]
        if transform is not None:
            a, b = transform.transform(a), transform.transform(b)
        return 100 * spearman(pair_cosines(a, b), np.asarray(task.splits[split].labels))
