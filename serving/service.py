"""The long-lived parts of a running server: built once (off the event loop), closed on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from baihua.core.errors import BaihuaError
from baihua.core.spec import check_space
from baihua.encoder import EmbeddingPipeline
from baihua.index import GeodesicReranker, Store
from baihua.serving.batcher import MicroBatcher
from baihua.serving.components import (
    build_pipeline,
    open_sparse,
    open_store,
    resolve_max_length,
    store_directory,
)
from baihua.serving.documents import DocumentIndex
from baihua.serving.metrics import Metrics
from baihua.serving.settings import Settings
from baihua.serving.storage import DataDirectory, storage_errors

logger = logging.getLogger(__name__)


@dataclass
class Service:
    pipeline: EmbeddingPipeline
    batcher: MicroBatcher
    documents: DocumentIndex
    owns_store: bool
    created: int = field(default_factory=lambda: int(time.time()))  # when it was loaded

    @property
    def model(self) -> str:
        return self.pipeline.encoder.name

    def drain(self, grace_s: float) -> None:
        """Start a graceful stop: refuse new encoder work now, encode what is queued, and fail
        what is still queued just before `grace_s` runs out, so every request is answered."""
        self.batcher.stop_accepting()
        margin = min(1.0, grace_s / 2)
        asyncio.get_running_loop().call_later(
            grace_s - margin, self.batcher.fail_queued, "the server is shutting down"
        )

    async def close(self) -> None:
        """Finish with the encoder and the geodesic graph, then snapshot the index so the next
        start need not rebuild. A snapshot the disk refuses (full, read-only, gone) is logged
        in one line and skipped: the last snapshot stays, the documents are committed, and the
        next start rebuilds the index from them."""
        await self.batcher.close()
        await asyncio.to_thread(self.documents.reranker.close)
        store = self.documents.store
        await asyncio.to_thread(self._snapshot)
        if self.owns_store:
            await asyncio.to_thread(store.close)

    def _snapshot(self) -> None:
        directory = self.documents.directory
        try:
            with storage_errors(None if directory is None else directory.path):
                self.documents.save()
        except BaihuaError as error:
            logger.warning("index snapshot not written, the last one is kept: %s", error)


def load_components(settings: Settings) -> tuple[EmbeddingPipeline, Store]:
    """The artifact, the model and the index, checked against each other: what `serve` loads
    before it binds its port, so that a wrong combination stops the process instead of serving
    503s or wrong scores. Raises what `build_pipeline` and `open_store` raise."""
    pipeline = build_pipeline(settings)
    return pipeline, open_store(settings, pipeline)


def check_store(store: Store, pipeline: EmbeddingPipeline) -> None:
    """A store handed in must hold vectors of the pipeline's space (or at least its dim)."""
    if store.spec is not None:
        check_space(store.spec, pipeline.spec, what="the index", hint="serve it in its own space")
    if store.dim != pipeline.dim:
        raise ValueError(f"the store holds {store.dim}-dim vectors; the model makes {pipeline.dim}")


def describe(pipeline: EmbeddingPipeline, store: Store) -> str:
    """The start-up line: what is served."""
    where = getattr(store, "path", None) or "memory"
    chosen_by = getattr(pipeline.encoder.runner, "chosen_by", None)
    return (
        f"serving {pipeline.spec.summary()}; {pipeline.dim} dims; index {where}: "
        f"{len(store)} documents" + (f"; backend chosen by {chosen_by}" if chosen_by else "")
    )


async def load_service(
    settings: Settings,
    metrics: Metrics,
    pipeline: EmbeddingPipeline | None = None,
    store: Store | None = None,
) -> Service:
    """Build what was not handed in: the model, then the index sized to its output vectors."""
    if pipeline is None:
        settings, _ = await asyncio.to_thread(resolve_max_length, settings)
        pipeline = await asyncio.to_thread(build_pipeline, settings)
    owns_store = store is None
    if store is None:
        store = await asyncio.to_thread(open_store, settings, pipeline)
    else:
        check_store(store, pipeline)
    batcher = MicroBatcher(
        pipeline,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queued_texts=settings.max_queued_texts,
        deadline_s=settings.request_timeout_s,
        max_queued_texts_per_client=settings.max_queued_texts_per_client,
        observe_batch=metrics.observe_batch,
        on_shed=metrics.observe_shed,
        observe_stage=metrics.observe_stage,
    )
    batcher.start()
    reranker = GeodesicReranker(
        store,
        k=settings.geodesic_k,
        candidates=settings.geodesic_candidates,
        reach=settings.geodesic_reach,
    )
    sparse = await asyncio.to_thread(open_sparse, settings, store)
    where = store_directory(settings, store)
    directory = None if where is None else DataDirectory(where)
    documents = await asyncio.to_thread(DocumentIndex, store, batcher, reranker, sparse, directory)
    metrics.track(queue_depth=batcher.queue_depth, index_size=store.__len__)
    return Service(pipeline, batcher, documents, owns_store)
