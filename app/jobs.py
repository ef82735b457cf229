"""Offline batch jobs: resumable, checkpointed, silent (the CLI draws the progress bar)."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from encoder import Encoder
from encoder.corpus import CorpusError, iter_corpus
from encoder.encoder import TextType
from whitening import Moments, Whitening

Progress = Callable[[int], None]


def chunked(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


@dataclass
class FitJob:
    """Corpus → encoder → streaming moments (checkpointed per chunk) → whitening artifact.

    A checkpoint `<out>.partial/moments.npz` records the moments and how many sentences they
    cover; a rerun with the same corpus, model, pooling and max length resumes from there.
    """

    corpus: Path
    out: Path
    encoder: Encoder
    n_components: int | None = None
    beta: float = 1.0
    gamma: float = 1.0
    text_type: TextType = "query"
    chunk_size: int = 2048

    @property
    def checkpoint(self) -> Path:
        return self.out.with_name(self.out.name + ".partial") / "moments.npz"

    def _identity(self) -> dict[str, int | str]:
        return {
            "corpus": str(self.corpus.resolve()),
            "model": self.encoder.name,
            "pooling": self.encoder.pooling,
            "max_length": self.encoder.max_length,
            "text_type": self.text_type,
        }

    def plan(self, total: int) -> int:
        """Check the job against the corpus size (from `count_sentences`, which validates every
        line before any encoding); return how many sentences a checkpoint already covers."""
        k = self.n_components or self.encoder.dim
        if not 1 <= k <= self.encoder.dim:
            raise ValueError(
                f"n_components must be between 1 and the model's dimension {self.encoder.dim}, "
                f"got {k}"
            )
        if total < max(k, 2):
            raise CorpusError(
                f"{self.corpus}: {total} sentences, fewer than n_components={k}; "
                "use a larger corpus or a smaller --n-components"
            )
        return self._resume()[1]

    def _resume(self) -> tuple[Moments, int]:
        if self.checkpoint.is_file():
            moments, extra = Moments.load(self.checkpoint)
            done = int(extra.pop("sentences_done", 0))
            if extra == self._identity() and moments.dim == self.encoder.dim:
                return moments, done
        return Moments.empty(self.encoder.dim), 0

    def run(self, progress: Progress | None = None) -> Whitening:
        moments, done = self._resume()
        sentences = itertools.islice(iter_corpus(self.corpus), done, None)
        for chunk in chunked(sentences, self.chunk_size):
            moments.update(self.encoder.encode(chunk, text_type=self.text_type, progress=progress))
            done += len(chunk)
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            moments.save(self.checkpoint, sentences_done=done, **self._identity())
        whitening = Whitening(self.n_components, beta=self.beta, gamma=self.gamma)
        whitening.fit_moments(moments)
        whitening.save_pretrained(
            self.out,
            model=self.encoder.name,
            pooling=self.encoder.pooling,
            max_length=self.encoder.max_length,
        )
        shutil.rmtree(self.checkpoint.parent, ignore_errors=True)
        return whitening
