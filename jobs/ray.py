"""The batch jobs on Ray (`--engine ray`): Ray Data splits the corpus into blocks of sentences,
an actor pool encodes them (one model per actor, its thread count set), and the driver merges.

- fit: each block yields its moments (n, Σx, Σxxᵀ in float64); the driver merges them in block
  order, exactly as the local job accumulates its chunks, and fits the same whitening.
- index build: each block is embedded as passages and upserted. With a Milvus store the workers
  write to Milvus themselves (a server, or the embedded engine's socket on this machine); the
  FAISS store belongs to the driver's process, so its blocks come back to the driver.

Each task reads its block from the corpus file (skipping to its first sentence), so workers need
the corpus at the same path, and baihua and the model in their environment. Runs a local Ray
when no address is given.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baihua.core.errors import UsageError
from baihua.core.progress import Progress
from baihua.encoder.corpus import iter_corpus
from baihua.encoder.encoder import TextType
from baihua.index import Store
from baihua.jobs.fit import FitJob
from baihua.jobs.index_build import corpus_documents
from baihua.serving.settings import Settings
from baihua.whitening import Moments, Whitening


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: a cluster address (None: a local Ray on ``num_cpus`` cores), the
    actor pool size, torch threads per actor, and sentences per block. Blocks of the local fit's
    chunk size encode every sentence in the same batch as ``--engine local`` does, so both fits
    differ only by the order of float64 sums."""

    address: str | None = None
    num_cpus: int | None = None
    actors: int = 2
    threads_per_actor: int = 1
    block_size: int = FitJob.chunk_size

    def __post_init__(self) -> None:
        for name in ("actors", "threads_per_actor", "block_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.address is not None and self.num_cpus is not None:
            raise UsageError("num_cpus sizes a local Ray; a cluster at an address has its own")


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[None]:
    """Connect to the cluster at ``options.address`` or start a local Ray; shut down after."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as error:
        raise UsageError(f"--engine ray needs Ray ({error}); pip install 'baihua[ray]'") from None
    if options.address is not None:
        ray.init(address=options.address, log_to_driver=False)
    else:
        ray.init(num_cpus=options.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def blocks(total: int, block_size: int) -> list[dict[str, int]]:
    return [
        {"start": start, "stop": min(start + block_size, total)}
        for start in range(0, total, block_size)
    ]


def _map_blocks(
    actor: type, settings: Settings, corpus: Path, total: int, options: RayOptions, **kwargs: Any
) -> Any:
    """The corpus's blocks mapped by a pool of ``actor``s, each with the settings (its thread
    count set), the corpus path and ``kwargs``; a Ray Dataset of one row per block."""
    import ray.data

    worker_settings = settings.model_dump() | {"num_threads": options.threads_per_actor}
    return ray.data.from_items(blocks(total, options.block_size)).map_batches(
        actor,
        batch_size=1,
        concurrency=options.actors,
        num_cpus=options.threads_per_actor,
        fn_constructor_kwargs={
            "settings": worker_settings,
            "corpus": str(corpus.resolve()),
            **kwargs,
        },
    )


class _MomentsActor:
    """Encodes blocks of the corpus and returns their moments; one model per actor."""

    def __init__(self, settings: dict[str, Any], corpus: str, text_type: TextType) -> None:
        from baihua.serving.components import build_encoder

        self.encoder = build_encoder(Settings.model_construct(**settings))
        self.corpus = Path(corpus)
        self.text_type = text_type

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start, stop = int(batch["start"][0]), int(batch["stop"][0])
        texts = list(itertools.islice(iter_corpus(self.corpus), start, stop))
        moments = Moments.empty(self.encoder.dim)
        moments.update(self.encoder.encode(texts, text_type=self.text_type))
        return {
            "start": np.array([start]),
            "n": np.array([moments.n]),
            "sum": moments.sum[None],
            "sum_outer": moments.sum_outer[None],
        }


def ray_moments(
    settings: Settings,
    corpus: Path,
    total: int,
    options: RayOptions,
    *,
    text_type: TextType = "query",
    progress: Progress | None = None,
) -> Moments:
    """Moments of the encoded corpus, computed block by block on the actor pool and merged in
    block order (inside a ``ray_session``)."""
    results = _map_blocks(_MomentsActor, settings, corpus, total, options, text_type=text_type)
    parts: dict[int, Moments] = {}
    for row in results.iter_rows():
        moments = Moments(int(row["n"]), row["sum"], row["sum_outer"])
        parts[int(row["start"])] = moments
        if progress is not None:
            progress(moments.n)
    merged = Moments.empty(next(iter(parts.values())).dim) if parts else None
    if merged is None:
        raise UsageError(f"{corpus}: no sentences to fit on")
    for start in sorted(parts):
        merged = merged.merge(parts[start])
    return merged


def ray_fit(
    job: FitJob, settings: Settings, total: int, options: RayOptions, progress: Progress | None
) -> Whitening:
    """The fit of ``job`` (whitening only) with its moments from Ray; writes the artifact."""
    if job.method != "whitening":
        raise UsageError(
            "--engine ray fits whitening (mergeable moments); a flow trains on every vector, "
            "use --engine local for --method flow"
        )
    with ray_session(options):
        moments = ray_moments(
            settings, job.corpus, total, options, text_type=job.text_type, progress=progress
        )
    return job.finish(moments)


class _IndexActor:
    """Embeds blocks of the corpus as passages; upserts them into Milvus itself when given a
    store address, else returns them to the driver."""

    def __init__(
        self, settings: dict[str, Any], corpus: str, milvus_uri: str | None, dim: int
    ) -> None:
        from baihua.serving.components import build_pipeline, open_milvus_store

        resolved = Settings.model_construct(**settings)
        self.pipeline = build_pipeline(resolved)
        self.corpus = Path(corpus)
        self.store: Store | None = None
        if milvus_uri is not None:
            self.store = open_milvus_store(resolved, dim, self.pipeline.spec, uri=milvus_uri)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        start, stop = int(batch["start"][0]), int(batch["stop"][0])
        documents = list(itertools.islice(corpus_documents(self.corpus), start, stop))
        ids, texts, payloads = (list(column) for column in zip(*documents, strict=True))
        vectors = self.pipeline.embed(texts, text_type="passage").vectors
        if self.store is not None:
            self.store.upsert(ids, vectors, texts, payloads)
            return {"start": np.array([start]), "count": np.array([len(ids)])}
        return {
            "start": np.array([start]),
            "count": np.array([len(ids)]),
            "ids": np.array(ids, dtype=np.int64)[None],
            "vectors": vectors[None],
            "texts": np.array([texts], dtype=object),
            "payloads": np.array([payloads], dtype=object),
        }


def worker_store_uri(settings: Settings, store: Store) -> str | None:
    """The store the workers of a Ray index build write to, as ``ray_index_build``'s
    ``worker_uri``: with ``index_backend=milvus`` the address of the settings' collection that
    other processes reach (the server's, or the socket of the embedded engine that the open
    ``store`` runs); with FAISS None, since the index belongs to the driver's process."""
    if settings.index_backend != "milvus":
        return None
    from baihua.index.milvus_store import MilvusStore

    assert isinstance(store, MilvusStore), "open_store opens Milvus for index_backend=milvus"
    return store.worker_uri


def ray_index_build(
    store: Store,
    settings: Settings,
    corpus: Path,
    total: int,
    options: RayOptions,
    *,
    worker_uri: str | None,
    progress: Progress | None = None,
) -> int:
    """Embed and store every document of ``corpus``; ``worker_uri`` (a Milvus address the
    workers can reach) makes the workers write, else the driver writes. Returns the count."""
    results = _map_blocks(
        _IndexActor, settings, corpus, total, options, milvus_uri=worker_uri, dim=store.dim
    )
    done = 0
    for row in results.iter_rows():
        if worker_uri is None:
            store.upsert(row["ids"], row["vectors"], list(row["texts"]), list(row["payloads"]))
        done += int(row["count"])
        if progress is not None:
            progress(int(row["count"]))
    store.save()
    return done
