"""Micro-batching: concurrent requests share encoder calls through one bounded queue.

One worker task drains the queue and runs `pipeline.embed` on dedicated threads, one per request
the backend runs at once (OpenVINO streams; else one), so the backend's own intra-op threads are
the only parallelism and concurrent requests never oversubscribe the CPU. One more batch is
handed over while those are encoded, so the encoder never idles waiting for a busy event loop to
collect, answer and hand over work. A batch is what is queued when a thread is free to take it,
up to `max_batch_size` texts: requests pile up while the encoder is busy, so waiting for more
(`max_wait_ms`, 0 by default) would only delay a lone request; me5-small on 2 cores, 8 clients of
32 texts, still filled batches of 63–64 texts without it, and a lone text came back ~5 ms sooner.

The queue is bounded in texts, not requests, and every job has a deadline: work that cannot be
served in time is refused at the door (503 with a `Retry-After` from the measured drain rate), and
work whose client went away or whose deadline passed is dropped before it reaches the encoder.
A batch that fails is retried job by job and text by text, so one text the model cannot take
fails only its own request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from baihua.encoder import Embedded, EmbeddingPipeline
from baihua.encoder.encoder import TextType, TruncationSide

logger = logging.getLogger(__name__)

BATCHES_WAITING = 1  # batches handed to the encoder threads beyond those being encoded
PROBE_TEXT = "ok"  # encoded when every text of a failed batch fails alone: is the encoder broken?
MAX_RETRY_AFTER_S = 60


class EncoderUnavailable(RuntimeError):
    """The queue is full, the deadline passed or the server is shutting down (HTTP 503)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ClientOverLimit(EncoderUnavailable):
    """One client has more texts queued than its share (HTTP 429)."""


class QueueFullError(EncoderUnavailable):
    """Too many texts are waiting (HTTP 503, or 429 under OpenAI's /v1)."""


class EncoderError(RuntimeError):
    """The encoder fails on every input, a known-good probe included (HTTP 500)."""


class TextRejected(ValueError):
    """The encoder cannot take these texts (positions in the request); the others are fine."""

    def __init__(self, positions: list[int], reason: str) -> None:
        super().__init__(f"the encoder cannot take the text(s) at {positions}: {reason}")
        self.positions = positions
        self.reason = reason


@dataclass(frozen=True)
class EmbedOptions:
    """Everything besides the texts that changes the vectors: only equal options share a call."""

    text_type: TextType = "query"
    whiten: bool = True
    normalize: bool = True
    dimensions: int | None = None
    truncation_side: TruncationSide = "right"


class _State(enum.Enum):
    QUEUED = "queued"
    ENCODING = "encoding"
    DONE = "done"  # answered, dropped or failed


@dataclass(eq=False)
class _Job:
    texts: Sequence[str]
    options: EmbedOptions
    deadline: float
    client: str | None
    future: asyncio.Future[Embedded] = field(repr=False)
    queued_at: float = 0.0
    state: _State = _State.QUEUED


class DrainRate:
    """Texts per second the encoder gets through, an exponential moving average over calls;
    `parallel` calls run at once, each at the rate observed."""

    def __init__(self, smoothing: float = 0.2, parallel: int = 1) -> None:
        self.smoothing = smoothing
        self.parallel = parallel
        self.texts_per_s: float | None = None

    def observe(self, n_texts: int, seconds: float) -> None:
        rate = self.parallel * n_texts / max(seconds, 1e-6)
        previous = self.texts_per_s
        self.texts_per_s = (
            rate if previous is None else previous + self.smoothing * (rate - previous)
        )

    def seconds_for(self, n_texts: int) -> float:
        """Expected time to encode `n_texts` (0 before the first measurement)."""
        return 0.0 if self.texts_per_s is None else n_texts / self.texts_per_s


class MicroBatcher:
    """Queue texts from many requests and embed them in a few large encoder calls.

    Parameters
    ----------
    max_queued_texts : texts waiting at most; more is a 503.
    deadline_s : how long a request may wait for its vectors; a request that would not be served
        in time is refused, and one still queued at its deadline is dropped (503).
    max_queued_texts_per_client : one client's share of the queue (429 above it); None: no share.
    observe_batch : called as `observe_batch(embedded, seconds)` after each encoder call.
    on_shed : called as `on_shed(reason, n_texts)` for work refused or dropped unencoded.
    observe_stage : called as `observe_stage(stage, seconds)` for the time a job spent from
        its request's arrival to the queue ("parse") and in the queue ("queue").
    """

    def __init__(
        self,
        pipeline: EmbeddingPipeline,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        max_queued_texts: int = 4096,
        deadline_s: float = 10.0,
        max_queued_texts_per_client: int | None = None,
        observe_batch: Callable[[Embedded, float], None] | None = None,
        on_shed: Callable[[str, int], None] | None = None,
        observe_stage: Callable[[str, float], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queued_texts = max_queued_texts
        self.deadline_s = deadline_s
        self.max_queued_texts_per_client = max_queued_texts_per_client
        self.parallel = pipeline.encoder.runner.parallel_requests
        self.rate = DrainRate(parallel=self.parallel)
        self._observe_batch = observe_batch
        self._on_shed = on_shed
        self._observe_stage = observe_stage
        self._pending: collections.deque[_Job] = collections.deque()
        self._queued_texts = 0
        self._per_client: collections.Counter[str] = collections.Counter()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(self.parallel, thread_name_prefix="encoder")
        self._worker: asyncio.Task[None] | None = None
        self._in_flight: set[_Job] = set()
        self._batches: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self.parallel + BATCHES_WAITING)
        self._accepting = True

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    def stop_accepting(self) -> None:
        """Refuse new work (503) from now on; what is queued is still encoded."""
        self._accepting = False

    def fail_queued(self, message: str) -> None:
        """Fail every job still waiting (503); the batch being encoded finishes."""
        while self._pending:
            job = self._pending.popleft()
            self._finish_unencoded(job, "shutdown", EncoderUnavailable(message))

    async def close(self) -> None:
        """Stop the worker, fail what is still queued, and release the encoder thread."""
        self.stop_accepting()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for batch in self._batches:
            batch.cancel()
        self.fail_queued("the server is shutting down")
        for job in self._in_flight:
            self._fail(job, EncoderUnavailable("the server is shutting down"))
        self._executor.shutdown(wait=True)

    def queue_depth(self) -> int:
        """Texts waiting for the encoder (not counting the batch being encoded)."""
        return self._queued_texts

    def retry_after_s(self) -> int:
        """Seconds until the queue has drained at the measured rate (1 to 60)."""
        seconds = self.rate.seconds_for(self._queued_texts)
        return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(seconds))))

    async def embed(
        self,
        texts: Sequence[str],
        options: EmbedOptions,
        *,
        client: str | None = None,
        arrived: float | None = None,
    ) -> Embedded:
        """Embed `texts` as part of some batch, within `deadline_s` of `arrived` (the event
        loop's time when the request reached the server; None: now).

        Raises EncoderUnavailable (or ClientOverLimit), TextRejected or EncoderError. Cancelling
        the caller (a client that went away) drops the job if it has not reached the encoder.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        arrived = now if arrived is None else arrived
        deadline = arrived + self.deadline_s
        self._admit(len(texts), client, deadline - now)
        self._observe("parse", now - arrived)
        job = _Job(texts, options, deadline, client, loop.create_future(), queued_at=now)
        self._pending.append(job)
        self._queued_texts += len(texts)
        if client is not None:
            self._per_client[client] += len(texts)
        self._wakeup.set()
        try:
            done, _ = await asyncio.wait({job.future}, timeout=max(0.0, deadline - now))
        except asyncio.CancelledError:
            if job.state is _State.QUEUED:
                self._finish_unencoded(job, "disconnected", None)
            job.future.cancel()  # encoding: its result has no taker
            raise
        if not done and job.state is _State.QUEUED:
            self._finish_unencoded(job, "deadline", self._deadline_error())
        return await job.future  # encoding: it is almost done; done: its result or error

    def _admit(self, n_texts: int, client: str | None, remaining_s: float) -> None:
        if not self._accepting:
            raise EncoderUnavailable("the server is shutting down", self.retry_after_s())
        if remaining_s <= 0:  # it waited out its deadline before reaching the queue
            self._shed("deadline", n_texts)
            raise self._deadline_error()
        queued = self._queued_texts
        if queued and queued + n_texts > self.max_queued_texts:  # alone, any request may wait
            self._shed("queue_full", n_texts)
            raise QueueFullError(
                f"the encoder queue is full ({queued} texts waiting, "
                f"max_queued_texts is {self.max_queued_texts})",
                self.retry_after_s(),
            )
        ahead = self.rate.seconds_for(queued)
        if ahead > remaining_s:
            self._shed("queue_full", n_texts)
            raise QueueFullError(
                f"the encoder queue holds about {ahead:.1f} s of work, more than the "
                f"{max(0.0, remaining_s):.1f} s left of this request's {self.deadline_s:g} s "
                "deadline (request_timeout_s)",
                self.retry_after_s(),
            )
        share = self.max_queued_texts_per_client
        if client is not None and share is not None and self._per_client[client] + n_texts > share:
            self._shed("client_share", n_texts)
            raise ClientOverLimit(
                f"this client has {self._per_client[client]} texts queued; its share is {share} "
                "(max_queued_texts_per_client)",
                self.retry_after_s(),
            )

    def _too_late(self, job: _Job, now: float) -> bool:
        """It would finish after its deadline (a job too big for any deadline is still tried)."""
        seconds = self.rate.seconds_for(len(job.texts))
        return now >= job.deadline or (seconds < self.deadline_s and now + seconds > job.deadline)

    def _deadline_error(self) -> EncoderUnavailable:
        return EncoderUnavailable(
            f"the request waited its whole deadline ({self.deadline_s:g} s from its arrival, "
            "request_timeout_s) for the encoder",
            self.retry_after_s(),
        )

    def _dequeue(self, job: _Job) -> None:
        """Take `job`'s texts off the queue's accounting (it stays in the deque until popped)."""
        self._queued_texts -= len(job.texts)
        if job.client is not None:
            self._per_client[job.client] -= len(job.texts)
            if self._per_client[job.client] <= 0:
                del self._per_client[job.client]

    def _finish_unencoded(self, job: _Job, reason: str, error: Exception | None) -> None:
        """Drop a queued job: fail it with `error`, or cancel it (its client has gone)."""
        if job.state is not _State.QUEUED:
            return
        self._dequeue(job)
        job.state = _State.DONE
        self._shed(reason, len(job.texts))
        if job.future.done():
            return
        if error is None:
            job.future.cancel()
        else:
            job.future.set_exception(error)

    def _observe(self, stage: str, seconds: float) -> None:
        if self._observe_stage is not None:
            self._observe_stage(stage, seconds)

    def _shed(self, reason: str, n_texts: int) -> None:
        if self._on_shed is not None:
            self._on_shed(reason, n_texts)

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                jobs = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            self._in_flight.update(jobs)
            batch = asyncio.get_running_loop().create_task(self._encode_batch(jobs))
            self._batches.add(batch)
            batch.add_done_callback(self._batches.discard)

    async def _encode_batch(self, jobs: list[_Job]) -> None:
        """Encode one collected batch, an encoder call per distinct options."""
        try:
            groups: dict[EmbedOptions, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.options, []).append(job)
            for options, group in groups.items():
                await self._encode(options, group)
        finally:
            self._in_flight.difference_update(jobs)
            self._slots.release()

    def _take(self) -> _Job | None:
        """The next job still worth encoding, marked as encoding; None when none is queued."""
        loop = asyncio.get_running_loop()
        while self._pending:
            job = self._pending.popleft()
            if job.state is not _State.QUEUED:
                continue  # dropped while it waited
            if job.future.done():  # cancelled by its caller
                self._finish_unencoded(job, "disconnected", None)
                continue
            if self._too_late(job, loop.time()):
                self._finish_unencoded(job, "deadline", self._deadline_error())
                continue
            self._dequeue(job)
            job.state = _State.ENCODING
            self._observe("queue", loop.time() - job.queued_at)
            return job
        return None

    async def _collect(self) -> list[_Job]:
        """Wait for one job, then take more until the batch is full or max_wait has passed."""
        first = self._take()
        while first is None:
            self._wakeup.clear()
            await self._wakeup.wait()
            first = self._take()
        jobs = [first]
        n_texts = len(first.texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while n_texts < self.max_batch_size:
            job = self._take()
            if job is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                continue
            jobs.append(job)
            n_texts += len(job.texts)
        return jobs

    async def _encode(self, options: EmbedOptions, jobs: list[_Job]) -> None:
        """One encoder call for jobs with equal options; on failure, each job on its own.
        Jobs whose clients left, or whose deadlines passed, before the encoder thread got to
        them (a batch may wait there behind another) are not encoded."""
        loop = asyncio.get_running_loop()
        try:
            live, texts, result = await loop.run_in_executor(
                self._executor, self._embed_live, jobs, options
            )
        except Exception as err:
            logger.warning("encoder failed on a batch of %d jobs (%r); isolating", len(jobs), err)
            for job in jobs:
                if not job.future.done():
                    await self._encode_alone(job)
            return
        for job in jobs:
            if job not in live:  # its client left, or its deadline passed, while it waited
                gone = job.future.done()
                self._shed("disconnected" if gone else "deadline", len(job.texts))
                self._fail(job, self._deadline_error())
        if result is None:
            return
        embedded, seconds = result
        self._observe_call(len(texts), embedded, seconds)
        offsets = np.cumsum([0] + [len(job.texts) for job in live])
        for job, begin, end in zip(live, offsets[:-1], offsets[1:], strict=True):
            self._answer(job, _slice(embedded, begin, end))

    def _embed_live(
        self, jobs: list[_Job], options: EmbedOptions
    ) -> tuple[list[_Job], list[str], tuple[Embedded, float] | None]:
        """On the encoder thread: the jobs still awaited and within their deadlines (a cancelled
        future reads as done from any thread; the event loop's clock is `time.monotonic`), their
        texts, and their vectors with the call's seconds (None: no text)."""
        now = time.monotonic()
        live = [job for job in jobs if not job.future.done() and now < job.deadline]
        texts = [text for job in live for text in job.texts]
        return live, texts, self._embed(texts, options) if texts else None

    async def _encode_alone(self, job: _Job) -> None:
        """Encode a job from a failed batch text by text: it fails alone, naming its bad texts,
        or with EncoderError when the encoder fails even on a known-good text."""
        parts: list[Embedded] = []
        bad: list[int] = []
        reason = ""
        for position, text in enumerate(job.texts):
            try:
                parts.append(await self._call([text], job.options))
            except Exception as err:
                bad.append(position)
                reason = reason or f"{type(err).__name__}: {err}"
        if not bad:
            self._answer(job, _concat(parts))
            return
        if not parts:
            try:
                await self._call([PROBE_TEXT], job.options)
            except Exception as err:
                logger.exception("the encoder fails even on a probe text")
                self._fail(job, EncoderError(f"the encoder failed: {type(err).__name__}: {err}"))
                return
        self._fail(job, TextRejected(bad, reason))

    async def _call(self, texts: list[str], options: EmbedOptions) -> Embedded:
        loop = asyncio.get_running_loop()
        embedded, seconds = await loop.run_in_executor(self._executor, self._embed, texts, options)
        self._observe_call(len(texts), embedded, seconds)
        return embedded

    def _observe_call(self, n_texts: int, embedded: Embedded, seconds: float) -> None:
        self.rate.observe(n_texts, seconds)
        if self._observe_batch is not None:
            self._observe_batch(embedded, seconds)

    def _answer(self, job: _Job, embedded: Embedded) -> None:
        job.state = _State.DONE
        if not job.future.done():
            job.future.set_result(embedded)

    def _fail(self, job: _Job, error: Exception) -> None:
        job.state = _State.DONE
        if not job.future.done():
            job.future.set_exception(error)

    def _embed(self, texts: list[str], options: EmbedOptions) -> tuple[Embedded, float]:
        """The vectors and the seconds the call took, timed on the encoder thread (not the
        wait behind the batch before it)."""
        start = time.perf_counter()
        embedded = self.pipeline.embed(
            texts,
            text_type=options.text_type,
            whiten=options.whiten,
            normalize=options.normalize,
            dimensions=options.dimensions,
            truncation_side=options.truncation_side,
        )
        return embedded, time.perf_counter() - start


def _slice(embedded: Embedded, begin: int, end: int) -> Embedded:
    return Embedded(
        embedded.vectors[begin:end], embedded.truncated[begin:end], embedded.n_tokens[begin:end]
    )


def _concat(parts: list[Embedded]) -> Embedded:
    return Embedded(
        np.concatenate([part.vectors for part in parts]),
        np.concatenate([part.truncated for part in parts]),
        np.concatenate([part.n_tokens for part in parts]),
    )
