"""The offline fit: corpus → encoder → checkpointed moments (or vectors) → transform artifact;
and the random projection baseline, which needs no corpus.

Resumable and silent; the CLI draws the progress bar."""

from __future__ import annotations

import io
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from baihua.core.errors import UsageError
from baihua.core.files import write_atomic
from baihua.core.iteration import chunked
from baihua.core.progress import Progress
from baihua.core.spec import SpecMismatchError, check_space
from baihua.encoder import Encoder, encoder_spec
from baihua.encoder.corpus import CorpusError, iter_corpus
from baihua.encoder.encoder import TextType
from baihua.serving.components import build_encoder
from baihua.serving.settings import Settings
from baihua.whitening import Flow, Moments, Whitening
from baihua.whitening.artifact import check_replaceable
from baihua.whitening.projection import RandomProjection


def check_out(out: Path) -> None:
    """Raise unless an artifact can be written to ``out`` (checked before a model loads)."""
    check_replaceable(out)
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"--out {out}: {out.parent} is a file, not a folder")


def check_fit(
    corpus: Path,
    out: Path,
    total: int,
    *,
    method: Literal["whitening", "flow"] = "whitening",
    n_components: int | None = None,
    beta: float = 1.0,
    gamma: float = 1.0,
    cap_n_components: bool = False,
) -> None:
    """Everything about a fit that can be checked before a model loads: the output folder, the
    method's options and whether `total` sentences (from `count_sentences`) can support them."""
    check_out(out)
    if method == "flow":
        if n_components is not None:
            raise UsageError("a flow keeps every dimension; drop --n-components for --method flow")
        if total < 2:
            raise CorpusError(f"{corpus}: {total} sentences; a flow needs at least 2")
        return
    Whitening(n_components, beta=beta, gamma=gamma).check_params()
    if total < 2:
        raise CorpusError(f"{corpus}: {total} sentences; whitening needs at least 2")
    if n_components is not None and n_components > total - 1 and not cap_n_components:
        raise CorpusError(
            f"{corpus}: {total} sentences give a covariance of rank at most {total - 1}, below "
            f"--n-components {n_components}; components beyond the rank would be noise scaled "
            "up. Use a larger corpus, a smaller --n-components, or --cap-n-components"
        )


def fit_projection(
    out: Path, settings: Settings, n_components: int | None, seed: int = 0
) -> RandomProjection:
    """Draw the seeded Gaussian projection (`--method jl`) for the vectors of the settings' model
    and save it to ``out`` as an artifact of the model's space. It reads no corpus: only the
    model's dimension. The options and ``out`` are checked before the model loads."""
    if n_components is None:
        raise UsageError("--method jl needs --n-components (the dimensions to project to)")
    check_out(out)
    projection = RandomProjection(n_components, seed=seed)
    projection.check_params()
    encoder = build_encoder(settings)
    projection.fit_features(encoder.dim)
    projection.save_pretrained(out, spec=encoder_spec(encoder))
    return projection


@dataclass
class FitJob:
    """Corpus → encoder → checkpoint per chunk → fitted transform artifact, resumable.

    `<out>.partial/` holds the checkpoint: for whitening the running float64 moments
    (`moments-<n>.st`, d² numbers whatever the corpus size), for flow every encoded chunk
    (`vectors-<start>.npy`: a flow trains on the vectors themselves). `progress.json`, written
    after each chunk's file, is the commit point; it records the job (corpus, method, text type)
    and the encoder's `EmbeddingSpec`. A rerun of the same job resumes after the last committed
    chunk; a rerun with another corpus, method, text type or encoder space is refused, naming
    what differs, since mixing the checkpoint's vectors with new ones would fit nonsense.
    """

    corpus: Path
    out: Path
    encoder: Encoder
    method: Literal["whitening", "flow"] = "whitening"
    n_components: int | None = None
    beta: float = 1.0
    gamma: float = 1.0
    text_type: TextType = "query"
    cap_n_components: bool = False
    chunk_size: int = 2048

    @property
    def partial(self) -> Path:
        return self.out.with_name(self.out.name + ".partial")

    def _job(self) -> dict[str, str]:
        return {
            "corpus": str(self.corpus.resolve()),
            "method": self.method,
            "text_type": self.text_type,
        }

    def plan(self, total: int) -> int:
        """Check the job against the corpus size (from `count_sentences`, which validates every
        line before any encoding); return how many sentences a checkpoint already covers."""
        check_fit(
            self.corpus,
            self.out,
            total,
            method=self.method,
            n_components=self.n_components,
            beta=self.beta,
            gamma=self.gamma,
            cap_n_components=self.cap_n_components,
        )
        if self.n_components is not None and self.n_components > self.encoder.dim:
            raise UsageError(
                f"--n-components {self.n_components} is above the model's dimension "
                f"{self.encoder.dim}"
            )
        return self.done()

    def done(self) -> int:
        """Sentences that a committed checkpoint of this same job covers; SpecMismatchError if
        the checkpoint belongs to another job or encoder space."""
        progress = self.partial / "progress.json"
        if not progress.is_file():
            return 0
        record = json.loads(progress.read_text())
        if "identity" in record:  # written before specs: one dict of job and encoder fields
            identity = record["identity"]
            record["job"] = {k: identity[k] for k in ("corpus", "method", "text_type")}
            record["spec"] = {k: identity[k] for k in ("model", "pooling", "max_length")}
        what = f"the fit checkpoint {self.partial}"
        hint = (
            f"rerun with the settings it was started with, or delete {self.partial} to start over"
        )
        job = self._job()
        differences = {k: (record["job"][k], job[k]) for k in job if record["job"][k] != job[k]}
        if differences:
            raise SpecMismatchError(what, differences, hint)
        check_space(record["spec"], encoder_spec(self.encoder), what=what, hint=hint)
        return int(record["sentences_done"])

    def run(self, progress: Progress | None = None) -> Whitening | Flow:
        done = self.done()
        if not done:
            shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        sentences = itertools.islice(iter_corpus(self.corpus), done, None)
        for chunk in chunked(sentences, self.chunk_size):
            vectors = self.encoder.encode(chunk, text_type=self.text_type, progress=progress)
            self._checkpoint(vectors, done)
            record = {
                "job": self._job(),
                "spec": encoder_spec(self.encoder).to_dict(),
                "sentences_done": done + len(chunk),
            }
            write_atomic(self.partial / "progress.json", json.dumps(record).encode())
            (self.partial / f"moments-{done}.st").unlink(missing_ok=True)
            done += len(chunk)
        transform = self._fit(done)
        self._save(transform)
        return transform

    def finish(self, moments: Moments) -> Whitening:
        """Fit the whitening on moments gathered elsewhere (another engine) and write it."""
        whitening = Whitening(
            self.n_components,
            beta=self.beta,
            gamma=self.gamma,
            cap_n_components=self.cap_n_components,
        )
        whitening.fit_moments(moments)
        self._save(whitening)
        return whitening

    def _save(self, transform: Whitening | Flow) -> None:
        transform.save_pretrained(
            self.out, spec=encoder_spec(self.encoder), text_type=self.text_type
        )
        shutil.rmtree(self.partial, ignore_errors=True)

    def _checkpoint(self, vectors: np.ndarray, start: int) -> None:
        if self.method == "flow":
            buffer = io.BytesIO()
            np.save(buffer, vectors)
            write_atomic(self.partial / f"vectors-{start}.npy", buffer.getvalue())
            return
        moments = self._moments(start)
        moments.update(vectors)
        moments.save(self.partial / f"moments-{start + len(vectors)}.st")

    def _moments(self, done: int) -> Moments:
        if not done:
            return Moments.empty(self.encoder.dim)
        return Moments.load(self.partial / f"moments-{done}.st")[0]

    def _fit(self, done: int) -> Whitening | Flow:
        if self.method == "flow":
            files = sorted(self.partial.glob("vectors-*.npy"), key=lambda p: int(p.stem[8:]))
            vectors = [np.load(f) for f in files if int(f.stem[8:]) < done]
            return Flow().fit(np.concatenate(vectors))
        whitening = Whitening(
            self.n_components,
            beta=self.beta,
            gamma=self.gamma,
            cap_n_components=self.cap_n_components,
        )
        return whitening.fit_moments(self._moments(done))
