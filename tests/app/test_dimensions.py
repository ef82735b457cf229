"""`dimensions` on /embed and /v1/embeddings: one full-rank artifact serves every k."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from baihua.encoder import EmbeddingPipeline
from baihua.whitening import Whitening
from tests.app.conftest import StartServer
from tests.conftest import FIT_TEXTS, WHITENED_DIM

TEXTS = ["hello world", "我在中国", "bert 的 一", "a b c"]


@pytest.fixture
def full_rank_url(start_server: StartServer, pipeline: EmbeddingPipeline) -> str:
    """A server with whitening fitted at full rank (32) on the vectors `pipeline`'s 16-dim
    whitening was fitted on."""
    encoder = pipeline.encoder
    full = Whitening().fit(encoder.encode(FIT_TEXTS))
    return start_server(EmbeddingPipeline(encoder, full))


def test_embed_dimensions_of_a_full_fit_equal_a_fit_at_k(
    full_rank_url: str, pipeline: EmbeddingPipeline
) -> None:
    body = httpx.post(
        f"{full_rank_url}/embed", json={"texts": TEXTS, "dimensions": WHITENED_DIM}
    ).json()
    assert body["dim"] == WHITENED_DIM
    np.testing.assert_allclose(
        np.array(body["embeddings"]), pipeline.embed(TEXTS).vectors, atol=1e-5
    )


def test_openai_dimensions_of_a_full_fit_equal_a_fit_at_k(
    full_rank_url: str, pipeline: EmbeddingPipeline
) -> None:
    client = openai.OpenAI(base_url=f"{full_rank_url}/v1", api_key="-", max_retries=0)
    response = client.embeddings.create(model="m", input=TEXTS, dimensions=WHITENED_DIM)
    vectors = np.array([item.embedding for item in response.data])
    np.testing.assert_allclose(vectors, pipeline.embed(TEXTS).vectors, atol=1e-5)


def test_dimensions_are_normalised_after_slicing(full_rank_url: str) -> None:
    body = httpx.post(f"{full_rank_url}/embed", json={"texts": TEXTS, "dimensions": 3}).json()
    vectors = np.array(body["embeddings"])
    assert vectors.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("dimensions", [0, WHITENED_DIM + 1])
def test_dimensions_outside_1_to_dim_are_422_naming_the_limit(
    client: httpx.Client, dimensions: int
) -> None:
    response = client.post("/embed", json={"texts": ["hi"], "dimensions": dimensions})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("dimensions: ")


def test_the_schema_states_the_dimension_limit(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    (dimensions,) = (
        branch
        for branch in schema["EmbedRequest"]["properties"]["dimensions"]["anyOf"]
        if branch["type"] == "integer"
    )
    assert (dimensions["minimum"], dimensions["maximum"]) == (1, WHITENED_DIM)


def test_unnormalised_dimensions_are_the_first_columns_of_the_whitened_vectors(
    full_rank_url: str, pipeline: EmbeddingPipeline
) -> None:
    body = httpx.post(
        f"{full_rank_url}/embed", json={"texts": TEXTS, "dimensions": 3, "normalize": False}
    ).json()
    full = Whitening().fit(pipeline.encoder.encode(FIT_TEXTS))
    expected = EmbeddingPipeline(pipeline.encoder, full).embed(TEXTS, normalize=False).vectors
    np.testing.assert_allclose(np.array(body["embeddings"]), expected[:, :3], rtol=1e-5, atol=1e-5)
