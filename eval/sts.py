"""The BERT-whitening STS evaluation: Spearman between cosine and label, for a grid of
models × poolings × transforms, each distinct sentence encoded once."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from baihua.core.errors import UsageError
from baihua.encoder import Encoder, encoder_spec, l2_normalize
from baihua.eval.cache import VectorCache
from baihua.eval.datasets import StsTask, load_task
from baihua.eval.transforms import TransformSpec, fit_transform
from baihua.whitening import Flow, Whitening, read_metadata

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


@dataclass
class StsEval:
    """One grid. `fit_on`: "task" (every split of the task, as the paper), "test", or a list of
    corpus sentences fitted once per model and pooling."""

    data_dir: Path
    tasks: Sequence[str]
    poolings: Sequence[str]
    transforms: Sequence[TransformSpec]
    cache_dir: Path
    fit_on: str | list[str] = "task"
    splits: Sequence[str] = ("test",)
    max_length: int | None = None  # None: an artifact row's limit, else the paper's
    progress: Callable[[int], None] | None = None

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
        for task in loaded:
            vectors = self.vectors(encoder, task)
            for pooling in self.poolings:
                for spec in self.transforms:
                    started = time.perf_counter()
                    transform = self.fitted(encoder, task.name, pooling, spec, vectors[pooling])
                    fit_seconds = time.perf_counter() - started
                    for split in self.splits:
                        result = results[(pooling, spec.name, split)]
                        score = self._score(task, split, vectors[pooling], transform)
                        result.scores[task.name] = score
                        result.sizes[task.name] = len(task.splits[split])
                        result.fit_seconds[task.name] = fit_seconds
        return list(results.values())

    def fitted(
        self,
        encoder: Encoder,
        task: str,
        pooling: str,
        spec: TransformSpec,
        vectors: dict[str, np.ndarray],
    ) -> Whitening | Flow | None:
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
        if self.fit_on == "test":
            return task.splits["test"].texts()
        return task.texts()

    def _score(
        self,
        task: StsTask,
        split: str,
        vectors: dict[str, np.ndarray],
        transform: Whitening | Flow | None,
    ) -> float:
        a, b = vectors[f"{split}.1"], vectors[f"{split}.2"]
        if transform is not None:
            a, b = transform.transform(a), transform.transform(b)
        return 100 * spearman(pair_cosines(a, b), np.asarray(task.splits[split].labels))
