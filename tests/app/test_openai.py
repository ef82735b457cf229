"""POST /v1/embeddings with the official openai client, unchanged."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from baihua.encoder import EmbeddingPipeline
from tests.app.conftest import WHITENED_DIM, StartServer

TEXTS = ["hello world", "我在中国", "bert 的 一"]


@pytest.fixture
def url(start_server: StartServer) -> str:
    return start_server(api_key="secret")


@pytest.fixture
def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="secret", max_retries=0)


def test_openai_client_gets_the_same_vectors_as_embed(
    url: str, openai_client: openai.OpenAI, pipeline: EmbeddingPipeline
) -> None:
    # the client asks for base64 by default and decodes it itself
    response = openai_client.embeddings.create(model="any-name", input=TEXTS)
    vectors = np.array([item.embedding for item in response.data])
    auth = {"Authorization": "Bearer secret"}
    embed = httpx.post(f"{url}/embed", json={"texts": TEXTS}, headers=auth).json()
    np.testing.assert_array_equal(vectors, np.array(embed["embeddings"], dtype=np.float32))
    np.testing.assert_allclose(vectors, pipeline.embed(TEXTS).vectors, atol=1e-6)
    assert [item.index for item in response.data] == [0, 1, 2]
    assert response.model == pipeline.encoder.name
    assert response.usage.prompt_tokens == response.usage.total_tokens > len(TEXTS)


def test_float_format_and_a_single_string(
    openai_client: openai.OpenAI, pipeline: EmbeddingPipeline
) -> None:
    response = openai_client.embeddings.create(
        model="m", input="hello world", encoding_format="float", dimensions=WHITENED_DIM
    )
    assert len(response.data) == 1
    np.testing.assert_allclose(
        response.data[0].embedding, pipeline.embed(["hello world"]).vectors[0], atol=1e-6
    )


def test_token_id_arrays_are_422_saying_only_strings_are_supported(
    openai_client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as error:
        openai_client.embeddings.create(model="m", input=[[101, 102]])
    assert "only strings are supported" in error.value.message
    assert error.value.body["param"] == "input"


def test_other_dimensions_are_422(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as error:
        openai_client.embeddings.create(model="m", input="hi", dimensions=8)
    assert f"returns {WHITENED_DIM} dimensions" in error.value.message


def test_a_wrong_key_is_401(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai_client.with_options(api_key="wrong").embeddings.create(model="m", input="hi")
