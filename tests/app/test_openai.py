"""POST /v1/embeddings with the official openai client, unchanged."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from baihua.encoder import EmbeddingPipeline
from tests.app.conftest import StartServer
from tests.app.test_embed import SlowPipeline
from tests.conftest import WHITENED_DIM

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


def test_token_id_arrays_are_400_saying_only_strings_are_supported(
    openai_client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        openai_client.embeddings.create(model="m", input=[[101, 102]])
    assert "only strings are supported" in error.value.message
    assert error.value.body["param"] == "input"


def test_a_blank_input_is_400_naming_it_in_words(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        openai_client.embeddings.create(model="m", input=["ok", "  "])
    assert error.value.body["message"] == "input[1]: must not be empty or only whitespace"
    assert error.value.body["param"] == "input"
    assert error.value.body["type"] == "invalid_request_error"


def test_unknown_fields_are_ignored(
    openai_client: openai.OpenAI, pipeline: EmbeddingPipeline
) -> None:
    response = openai_client.embeddings.create(
        model="m", input="hi", encoding_format="float", extra_body={"truncate_prompt": 5}
    )
    np.testing.assert_allclose(
        response.data[0].embedding, pipeline.embed(["hi"]).vectors[0], atol=1e-6
    )


@pytest.mark.parametrize("input_type", ["passage", "document"])
def test_input_type_passage_embeds_with_the_passage_prefix(
    openai_client: openai.OpenAI, pipeline: EmbeddingPipeline, input_type: str
) -> None:
    response = openai_client.embeddings.create(
        model="m", input=TEXTS, extra_body={"input_type": input_type}
    )
    vectors = np.array([item.embedding for item in response.data])
    passages = pipeline.embed(TEXTS, text_type="passage").vectors
    np.testing.assert_allclose(vectors, passages, atol=1e-6)
    assert not np.allclose(vectors, pipeline.embed(TEXTS).vectors, atol=1e-3)


def test_dimensions_above_the_served_dimension_are_400(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        openai_client.embeddings.create(model="m", input="hi", dimensions=WHITENED_DIM + 1)
    assert f"have {WHITENED_DIM} dimensions" in error.value.message
    assert error.value.body["param"] == "dimensions"


def test_models_lists_the_served_model(
    openai_client: openai.OpenAI, pipeline: EmbeddingPipeline
) -> None:
    models = openai_client.models.list()
    assert [model.id for model in models.data] == [pipeline.encoder.name]
    assert openai_client.models.retrieve(pipeline.encoder.name).id == pipeline.encoder.name
    with pytest.raises(openai.NotFoundError) as error:
        openai_client.models.retrieve("text-embedding-3-small")
    assert "no model 'text-embedding-3-small'" in error.value.message


def test_a_full_queue_is_429_for_openai_clients(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    url = start_server(pipeline=SlowPipeline(pipeline, 0.5), max_queued_texts=1, max_batch_size=1)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)

    def call(_: int) -> str:
        try:
            client.embeddings.create(model="m", input="hi")
        except openai.RateLimitError as error:
            assert 1 <= int(error.response.headers["Retry-After"]) <= 60
            return "429"
        return "200"

    with ThreadPoolExecutor(6) as pool:
        outcomes = sorted(pool.map(call, range(6)))
    assert "200" in outcomes and "429" in outcomes, outcomes


def test_malformed_json_wrong_content_type_and_unknown_paths_get_openai_errors(url: str) -> None:
    auth = {"Authorization": "Bearer secret"}
    broken = httpx.post(
        f"{url}/v1/embeddings",
        content=b'{"input": "hi", ',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["error"]["message"]
    form = httpx.post(f"{url}/v1/embeddings", data={"input": "hi"}, headers=auth)
    assert form.status_code == 415
    assert "Content-Type: application/json" in form.json()["error"]["message"]
    missing = httpx.get(f"{url}/v1/nothing", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_wrong_key_is_401(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai_client.with_options(api_key="wrong").embeddings.create(model="m", input="hi")
