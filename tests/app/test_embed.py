"""POST /embed against a real server: values, options, limits, truncation, errors, back-pressure."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from baihua.encoder import Embedded, EmbeddingPipeline
from tests.app.conftest import StartServer
from tests.conftest import MAX_LENGTH, WHITENED_DIM

TEXTS = ["hello world", "我在中国", "bert 的 一", "a b c"]


class SlowPipeline(EmbeddingPipeline):
    """The real pipeline, slowed down so requests pile up in the queue."""

    def __init__(self, inner: EmbeddingPipeline, delay: float) -> None:
        super().__init__(inner.encoder, inner.transform)
        self.delay = delay

    def embed(self, texts: Sequence[str], **options: Any) -> Embedded:
        time.sleep(self.delay)
        return super().embed(texts, **options)


class BrokenPipeline(EmbeddingPipeline):
    """The real pipeline's shape, with an encoder that fails on everything."""

    def __init__(self, inner: EmbeddingPipeline) -> None:
        super().__init__(inner.encoder, inner.transform)

    def embed(self, texts: Sequence[str], **options: Any) -> Embedded:
        raise RuntimeError("the encoder exploded")


def test_embed_equals_the_pipeline_in_process(
    client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    response = client.post("/embed", json={"texts": TEXTS})
    assert response.status_code == 200
    body = response.json()
    expected = pipeline.embed(TEXTS).vectors
    np.testing.assert_allclose(np.array(body["embeddings"]), expected, atol=1e-6)
    assert body["dim"] == WHITENED_DIM
    assert body["truncated"] == [False] * len(TEXTS)
    assert body["model"] == pipeline.encoder.name


@pytest.mark.parametrize(
    "options",
    [
        {"whiten": False},
        {"normalize": False},
        {"text_type": "passage"},
        {"whiten": False, "normalize": False, "text_type": "passage"},
    ],
)
def test_embed_options_equal_the_pipeline_in_process(
    client: httpx.Client, pipeline: EmbeddingPipeline, options: dict[str, Any]
) -> None:
    body = client.post("/embed", json={"texts": TEXTS, **options}).json()
    expected = pipeline.embed(TEXTS, **options).vectors
    np.testing.assert_allclose(np.array(body["embeddings"]), expected, atol=1e-5)
    assert body["dim"] == expected.shape[1]


def test_concurrent_requests_with_different_options_are_not_mixed(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    # a long wait puts all requests into one batch window
    url = start_server(max_wait_ms=200)
    variants = [{"whiten": w, "normalize": n} for w in (True, False) for n in (True, False)] * 2
    with ThreadPoolExecutor(len(variants)) as pool:
        bodies = list(
            pool.map(lambda o: httpx.post(f"{url}/embed", json={"texts": TEXTS, **o}), variants)
        )
    for options, response in zip(variants, bodies, strict=True):
        expected = pipeline.embed(TEXTS, **options).vectors
        np.testing.assert_allclose(np.array(response.json()["embeddings"]), expected, atol=1e-5)


def test_truncation_at_the_token_limit_is_reported(
    client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    long_text = " ".join(["hello"] * (2 * MAX_LENGTH))
    body = client.post("/embed", json={"texts": ["hello", long_text]}).json()
    assert body["truncated"] == [False, True]
    expected = pipeline.embed(["hello", long_text]).vectors
    np.testing.assert_allclose(np.array(body["embeddings"]), expected, atol=1e-6)


def error_messages(response: httpx.Response) -> dict[str, str]:
    """{"texts.2": message, ...} from a 422 body."""
    assert response.status_code == 422, response.text
    return {
        ".".join(str(part) for part in error["loc"][1:]): error["msg"]
        for error in response.json()["detail"]
    }


def test_too_many_texts_is_422_naming_the_limit(start_server: StartServer) -> None:
    url = start_server(max_texts_per_request=3)
    errors = error_messages(httpx.post(f"{url}/embed", json={"texts": TEXTS}))
    assert "limit is 3 (max_texts_per_request)" in errors["texts"]


def test_too_long_text_is_422_naming_the_text(start_server: StartServer) -> None:
    url = start_server(max_chars_per_text=10)
    errors = error_messages(httpx.post(f"{url}/embed", json={"texts": ["short", "x" * 11]}))
    assert errors == {
        "texts.1": "texts[1]: text has 11 characters; the limit is 10 (max_chars_per_text)"
    }


@pytest.mark.parametrize(
    "body,field,message",
    [
        ({"texts": ["ok", ""]}, "texts.1", "empty"),
        ({"texts": ["ok", "  \n"]}, "texts.1", "empty"),
        ({"texts": []}, "texts", "at least 1"),
        ({}, "", "give exactly one of `texts` or `inputs`"),
        ({"texts": "hello"}, "texts", "valid list"),
        ({"texts": ["ok", 3]}, "texts.1", "valid string"),
        ({"texts": ["ok"], "whiten": "yes"}, "whiten", "valid boolean"),
        ({"texts": ["ok"], "text_type": "document"}, "text_type", "'query' or 'passage'"),
        ({"texts": ["ok"], "normalise": True}, "normalise", "normalise: is not a field"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(
    client: httpx.Client, body: dict[str, Any], field: str, message: str
) -> None:
    errors = error_messages(client.post("/embed", json=body))
    assert field in errors, errors
    assert message in errors[field]


def test_an_encoder_that_fails_on_everything_is_500(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    url = start_server(pipeline=BrokenPipeline(pipeline))
    failed = httpx.post(f"{url}/embed", json={"texts": ["hello"]})
    assert failed.status_code == 500
    assert "RuntimeError: the encoder exploded" in failed.json()["detail"]


def test_a_full_queue_is_503_with_retry_after(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    # one request encodes (0.5 s), one waits in the queue: the others find it full
    url = start_server(pipeline=SlowPipeline(pipeline, 0.5), max_queued_texts=1, max_batch_size=1)
    with ThreadPoolExecutor(6) as pool:
        responses = list(
            pool.map(lambda _: httpx.post(f"{url}/embed", json={"texts": ["hi"]}), range(6))
        )
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    rejected = next(r for r in responses if r.status_code == 503)
    assert 1 <= int(rejected.headers["Retry-After"]) <= 60
    assert "queue is full" in rejected.json()["detail"]
