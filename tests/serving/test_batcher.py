"""The micro-batcher in process, on the real tiny BERT: isolation, shedding, deadlines, shares."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baihua.encoder import Embedded, EmbeddingPipeline, Encoder
from baihua.serving.batcher import (
    ClientOverLimit,
    EmbedOptions,
    EncoderError,
    EncoderUnavailable,
    MicroBatcher,
    TextRejected,
)

OPTIONS = EmbedOptions()


class SlowPipeline(EmbeddingPipeline):
    """The real pipeline, `delay` seconds slower per call; records the texts it encoded and
    each call's size."""

    def __init__(self, inner: EmbeddingPipeline, delay: float) -> None:
        super().__init__(inner.encoder, inner.transform)
        self.delay = delay
        self.encoded: list[str] = []
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str], **options: Any) -> Embedded:
        time.sleep(self.delay)
        embedded = super().embed(texts, **options)
        self.encoded.extend(texts)
        self.calls.append(len(texts))
        return embedded


def run(coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def started(pipeline: EmbeddingPipeline, **options: Any) -> MicroBatcher:
    batcher = MicroBatcher(pipeline, **options)
    batcher.start()
    return batcher


def test_a_text_the_tokenizer_cannot_take_fails_only_its_own_request(
    pipeline: EmbeddingPipeline,
) -> None:
    """A lone surrogate makes the real tokenizer raise; the 30 requests batched with it pass."""
    good = [[f"hello {i}", "我在中国"] for i in range(30)]

    async def scenario() -> list[Any]:
        batcher = await started(pipeline, max_batch_size=256, max_wait_ms=50)
        jobs = [batcher.embed(texts, OPTIONS) for texts in good[:15]]
        jobs.append(batcher.embed(["fine", "bad \ud800 text"], OPTIONS))
        jobs += [batcher.embed(texts, OPTIONS) for texts in good[15:]]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.close()
        return results

    results = run(scenario())
    rejected = results.pop(15)
    assert isinstance(rejected, TextRejected) and rejected.positions == [1]
    for texts, result in zip(good, results, strict=True):
        assert isinstance(result, Embedded), result
        np.testing.assert_allclose(result.vectors, pipeline.embed(texts).vectors, atol=1e-5)


def test_an_encoder_that_fails_on_everything_is_an_encoder_error(
    pipeline: EmbeddingPipeline,
) -> None:
    class Broken(EmbeddingPipeline):
        def embed(self, texts: Sequence[str], **options: Any) -> Embedded:
            raise RuntimeError("out of memory")

    async def scenario() -> BaseException | None:
        batcher = await started(Broken(pipeline.encoder, pipeline.transform))
        try:
            await batcher.embed(["hello"], OPTIONS)
        except Exception as err:
            return err
        finally:
            await batcher.close()
        return None

    error = run(scenario())
    assert isinstance(error, EncoderError) and "out of memory" in str(error)


def test_a_free_encoder_takes_a_lone_request_at_once_and_a_busy_one_lets_requests_pile_up(
    pipeline: EmbeddingPipeline,
) -> None:
    """The default takes what is queued when a thread is free, without holding the batch for
    more: "a" goes alone, "b" (50 ms later) alone into the batch handed over behind it, and the
    four that come while both are taken share the next call."""
    slow = SlowPipeline(pipeline, 0.3)

    async def scenario() -> None:
        batcher = await started(slow, max_batch_size=64)
        first = asyncio.ensure_future(batcher.embed(["a"], OPTIONS))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.embed(["b"], OPTIONS))
        await asyncio.sleep(0.05)
        rest = [batcher.embed([f"c{i}"], OPTIONS) for i in range(4)]
        await asyncio.gather(first, second, *rest)
        await batcher.close()

    run(scenario())
    assert slow.calls == [1, 1, 4]


def test_cancelled_requests_are_dropped_before_the_encoder(pipeline: EmbeddingPipeline) -> None:
    slow = SlowPipeline(pipeline, 0.3)

    async def scenario() -> None:
        batcher = await started(slow, max_batch_size=1)
        first = asyncio.ensure_future(batcher.embed(["first"], OPTIONS))
        await asyncio.sleep(0.05)  # "first" is encoding; the next ones wait
        waiting = [asyncio.ensure_future(batcher.embed([f"gone {i}"], OPTIONS)) for i in range(5)]
        await asyncio.sleep(0.05)
        assert batcher.queue_depth() == 4  # "gone 0" waits on the encoder thread, behind "first"
        for task in waiting:
            task.cancel()
        await asyncio.sleep(0)
        assert batcher.queue_depth() == 0
        await first
        assert (await batcher.embed(["after"], OPTIONS)).vectors.shape[0] == 1
        await batcher.close()

    run(scenario())
    assert slow.encoded == ["first", "after"]


def test_a_request_still_queued_at_its_deadline_is_503_and_never_encoded(
    pipeline: EmbeddingPipeline,
) -> None:
    slow = SlowPipeline(pipeline, 0.5)

    async def scenario() -> list[Any]:
        batcher = await started(slow, max_batch_size=1, deadline_s=0.3)
        jobs = [batcher.embed([f"t{i}"], OPTIONS) for i in range(3)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await asyncio.sleep(0.6)  # nothing more gets encoded
        await batcher.close()
        return results

    results = run(scenario())
    assert isinstance(results[0], Embedded)
    for late in results[1:]:
        assert isinstance(late, EncoderUnavailable) and "deadline" in str(late)
    assert slow.encoded == ["t0"]


def test_the_queue_is_bounded_in_texts_and_retry_after_follows_the_drain_rate(
    pipeline: EmbeddingPipeline,
) -> None:
    slow = SlowPipeline(pipeline, 0.2)

    async def scenario() -> tuple[EncoderUnavailable, int]:
        batcher = await started(slow, max_batch_size=4, max_queued_texts=8, deadline_s=30)
        await batcher.embed(["warm"] * 4, OPTIONS)  # measures the rate: about 20 texts/s
        first = asyncio.ensure_future(batcher.embed(["a"] * 4, OPTIONS))
        await asyncio.sleep(0.05)  # encoding
        queued = [asyncio.ensure_future(batcher.embed(["b"] * 4, OPTIONS)) for _ in range(2)]
        await asyncio.sleep(0)
        try:
            await batcher.embed(["c"], OPTIONS)  # 8 texts wait: a ninth is one too many
        except EncoderUnavailable as err:
            error = err
        depth = batcher.queue_depth()
        await asyncio.gather(first, *queued)
        await batcher.close()
        return error, depth

    error, depth = run(scenario())
    assert depth == 8
    assert "queue is full" in str(error)
    # 8 texts at ~20 texts/s: about 0.4 s, rounded up
    assert error.retry_after_s == 1


def test_retry_after_grows_with_the_work_queued(pipeline: EmbeddingPipeline) -> None:
    batcher = MicroBatcher(pipeline)
    batcher.rate.observe(10, 1.0)  # 10 texts/s measured
    batcher._queued_texts = 95
    assert batcher.retry_after_s() == 10
    batcher._queued_texts = 10_000
    assert batcher.retry_after_s() == 60


def test_a_client_over_its_share_gets_429_while_others_are_served(
    pipeline: EmbeddingPipeline,
) -> None:
    slow = SlowPipeline(pipeline, 0.2)

    async def scenario() -> tuple[list[Any], Any]:
        batcher = await started(slow, max_batch_size=1, max_queued_texts_per_client=2)
        greedy = [batcher.embed([f"g{i}"], OPTIONS, client="greedy") for i in range(4)]
        tasks = [asyncio.ensure_future(job) for job in greedy]
        await asyncio.sleep(0)
        other = await batcher.embed(["polite"], OPTIONS, client="polite")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return results, other

    results, other = run(scenario())
    assert isinstance(other, Embedded)
    assert sum(isinstance(r, ClientOverLimit) for r in results) == 2
    assert sum(isinstance(r, Embedded) for r in results) == 2


def test_close_fails_what_is_queued(pipeline: EmbeddingPipeline) -> None:
    slow = SlowPipeline(pipeline, 0.3)

    async def scenario() -> list[Any]:
        batcher = await started(slow, max_batch_size=1)
        tasks = [asyncio.ensure_future(batcher.embed([f"t{i}"], OPTIONS)) for i in range(4)]
        await asyncio.sleep(0.05)
        batcher.stop_accepting()
        with pytest.raises(EncoderUnavailable, match="shutting down"):
            await batcher.embed(["late"], OPTIONS)
        batcher.fail_queued("the server is shutting down")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return results

    results = run(scenario())
    # t0 was encoding and t1 handed to the encoder thread behind it: both finish
    assert all(isinstance(r, Embedded) for r in results[:2])
    assert all(isinstance(r, EncoderUnavailable) for r in results[2:])


def test_two_streams_encode_two_batches_at_once_with_the_same_vectors(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """With an OpenVINO encoder of two streams the batcher runs two encoder calls at once and
    every request still gets its own texts' vectors."""
    encoder = Encoder(
        str(tiny_bert), device="cpu", backend="openvino", streams=2, cache_dir=tmp_path
    )
    pipeline = EmbeddingPipeline(encoder)
    requests = [[f"text {i} {j}" for j in range(i % 5 + 1)] for i in range(40)]

    async def scenario() -> list[Embedded]:
        batcher = await started(pipeline, max_batch_size=8, max_wait_ms=1)
        assert batcher.parallel == 2
        results = await asyncio.gather(*(batcher.embed(texts, OPTIONS) for texts in requests))
        await batcher.close()
        return results

    for texts, result in zip(requests, run(scenario()), strict=True):
        np.testing.assert_allclose(result.vectors, pipeline.embed(texts).vectors, atol=1e-5)
