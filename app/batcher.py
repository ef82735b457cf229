"""Micro-batching: concurrent requests share encoder calls through one bounded queue.

One worker task drains the queue (up to `max_batch_size` texts or `max_wait_ms`, whichever comes
first) and runs `pipeline.embed` on a single dedicated thread, so torch's own intra-op threads are
the only parallelism and concurrent requests never oversubscribe the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from baihua.encoder import Embedded, EmbeddingPipeline
from baihua.encoder.encoder import TextType

logger = logging.getLogger(__name__)


class EncoderUnavailable(RuntimeError):
    """The queue is full or the server is shutting down: the client should retry (HTTP 503)."""


class QueueFullError(EncoderUnavailable):
    """Too many requests are waiting (HTTP 503, or 429 under OpenAI's /v1)."""


class EncoderError(RuntimeError):
    """`pipeline.embed` failed for the batch this request was part of (HTTP 500)."""


@dataclass(frozen=True)
class EmbedOptions:
    """Everything besides the texts that changes the vectors: only equal options share a call."""

    text_type: TextType = "query"
    whiten: bool = True
    normalize: bool = True
    dimensions: int | None = None


@dataclass
class _Job:
    texts: Sequence[str]
    options: EmbedOptions
    future: asyncio.Future[Embedded] = field(repr=False)


class MicroBatcher:
    """Queue texts from many requests and embed them in a few large encoder calls.

    `observe_batch(embedded, seconds)` is called after each encoder call (for metrics).
    """

    def __init__(
        self,
        pipeline: EmbeddingPipeline,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        queue_size: int = 1024,
        observe_batch: Callable[[Embedded, float], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._observe_batch = observe_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._worker: asyncio.Task[None] | None = None
        self._in_flight: list[_Job] = []

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        """Stop the worker, fail what is still queued, and release the encoder thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while not self._queue.empty():
            self._in_flight.append(self._queue.get_nowait())
        for job in self._in_flight:
            if not job.future.done():
                job.future.set_exception(EncoderUnavailable("the server is shutting down"))
        self._executor.shutdown(wait=True)

    def queue_depth(self) -> int:
        """Requests waiting for the encoder (not counting the batch being encoded)."""
        return self._queue.qsize()

    async def embed(self, texts: Sequence[str], options: EmbedOptions) -> Embedded:
        """Embed `texts` as part of some batch; raises EncoderUnavailable or EncoderError."""
        future: asyncio.Future[Embedded] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(texts, options, future))
        except asyncio.QueueFull:
            raise QueueFullError(
                f"the encoder queue is full ({self._queue.maxsize} requests waiting)"
            ) from None
        return await future

    async def _run(self) -> None:
        while True:
            await self._collect()
            groups: dict[EmbedOptions, list[_Job]] = {}
            for job in self._in_flight:
                groups.setdefault(job.options, []).append(job)
            for options, jobs in groups.items():
                await self._encode(options, jobs)
            self._in_flight = []

    async def _collect(self) -> None:
        """Wait for one job, then take more until the batch is full or max_wait has passed.

        Jobs go straight into `_in_flight`, so `close` can fail them wherever it interrupts.
        """
        self._in_flight = [await self._queue.get()]
        n_texts = len(self._in_flight[0].texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while n_texts < self.max_batch_size:
            try:
                if self._queue.empty():
                    job = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
                else:
                    job = self._queue.get_nowait()
            except TimeoutError:
                break
            self._in_flight.append(job)
            n_texts += len(job.texts)

    async def _encode(self, options: EmbedOptions, jobs: list[_Job]) -> None:
        """One encoder call for jobs with equal options; results or the error go to each job."""
        jobs = [job for job in jobs if not job.future.done()]  # clients that went away
        if not jobs:
            return
        texts = [text for job in jobs for text in job.texts]
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            embedded = await loop.run_in_executor(self._executor, self._embed, texts, options)
        except Exception as err:
            logger.exception("encoder failed on a batch of %d texts", len(texts))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(
                        EncoderError(f"the encoder failed: {type(err).__name__}: {err}")
                    )
            return
        if self._observe_batch is not None:
            self._observe_batch(embedded, loop.time() - start)
        offsets = np.cumsum([0] + [len(job.texts) for job in jobs])
        for job, begin, end in zip(jobs, offsets[:-1], offsets[1:], strict=True):
            if not job.future.done():
                job.future.set_result(_slice(embedded, begin, end))

    def _embed(self, texts: list[str], options: EmbedOptions) -> Embedded:
        return self.pipeline.embed(
            texts,
            text_type=options.text_type,
            whiten=options.whiten,
            normalize=options.normalize,
            dimensions=options.dimensions,
        )


def _slice(embedded: Embedded, begin: int, end: int) -> Embedded:
    return Embedded(
        embedded.vectors[begin:end], embedded.truncated[begin:end], embedded.n_tokens[begin:end]
    )
