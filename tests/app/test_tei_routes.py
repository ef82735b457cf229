"""TEI's routes beside /embed: the root route, /invocations, /ping, /tokenize, /decode and TEI's
error shape, on a real server; then TEI's own clients pointed at its base URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from transformers import AutoTokenizer

from baihua.encoder import EmbeddingPipeline
from tests.app.conftest import StartServer, wait_until

TEXTS = ["hello world", "我在中国"]


def test_post_root_answers_as_embed_with_inputs(
    client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    root = client.post("/", json={"inputs": TEXTS})
    assert root.status_code == 200
    assert root.json() == client.post("/embed", json={"inputs": TEXTS}).json()
    np.testing.assert_allclose(root.json(), pipeline.embed(TEXTS).vectors, atol=1e-6)


def test_invocations_is_the_root_route(client: httpx.Client) -> None:
    body = {"inputs": "hello world", "normalize": False}
    assert client.post("/invocations", json=body).json() == client.post("/", json=body).json()


def test_prompt_name_chooses_the_prefix(client: httpx.Client, pipeline: EmbeddingPipeline) -> None:
    passage = client.post("/", json={"inputs": TEXTS, "prompt_name": "passage"}).json()
    expected = pipeline.embed(TEXTS, text_type="passage").vectors
    np.testing.assert_allclose(passage, expected, atol=1e-6)
    assert not np.allclose(passage, pipeline.embed(TEXTS).vectors, atol=1e-3)


def test_get_root_and_ping_are_tei_health_without_a_key(start_server: StartServer) -> None:
    server = start_server(api_key="secret")
    for path in ("/", "/ping"):
        response = httpx.get(server + path)
        assert (response.status_code, response.content) == (200, b"")
    assert httpx.post(server + "/", json={"inputs": "hi"}).status_code == 401


def test_health_is_503_in_tei_shape_when_loading_failed(
    start_server: StartServer, tmp_path
) -> None:
    server = start_server(pipeline=None, ready=False, model=str(tmp_path / "no-such-model"))
    wait_until(lambda: "failed" in httpx.get(server + "/readyz").json()["status"], "never failed")
    response = httpx.get(server + "/")
    assert response.status_code == 503
    assert response.json()["error_type"] == "Unhealthy"
    assert response.json()["error"].startswith("loading failed")


@pytest.mark.parametrize(
    "path,body,status,error_type,message",
    [
        ("/", {"inputs": []}, 400, "Empty", "inputs: List should have at least 1 item"),
        ("/", {"inputs": 3}, 422, "Validation", "inputs: must be a string or a list of strings"),
        ("/", {"texts": ["hi"]}, 422, "Validation", "texts: not a field of TEI's request"),
        ("/", {"inputs": "hi", "prompt_name": "doc"}, 422, "Validation", "prompt_name: "),
        ("/tokenize", {"inputs": []}, 400, "Empty", "inputs: List should have at least 1 item"),
        ("/decode", {"ids": "1 2"}, 422, "Validation", "ids: "),
    ],
)
def test_errors_on_tei_paths_take_tei_shape(
    client: httpx.Client, path: str, body: dict, status: int, error_type: str, message: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status
    assert set(response.json()) == {"error", "error_type"}
    assert response.json()["error_type"] == error_type
    assert response.json()["error"].startswith(message)


@pytest.fixture(scope="module")
def tokenizer(tiny_bert: Path) -> Any:
    """transformers' own tokenizer of the served model: what TEI's answers are checked against."""
    return AutoTokenizer.from_pretrained(tiny_bert)


def test_tokenize_gives_ids_spans_and_utf8_byte_offsets(
    client: httpx.Client, tokenizer: Any
) -> None:
    (tokens,) = client.post("/tokenize", json={"inputs": "我在 hello"}).json()
    text = "query: 我在 hello"  # the query prefix, as POST / embeds it
    assert [t["id"] for t in tokens] == tokenizer(text)["input_ids"]
    assert tokens[0] == {
        "id": tokenizer.cls_token_id,
        "text": tokenizer.cls_token,
        "special": True,
        "start": None,
        "stop": None,
    }
    encoded = text.encode("utf-8")
    for token in tokens[1:-1]:
        assert not token["special"]
        assert encoded[token["start"] : token["stop"]].decode("utf-8") == token["text"]
    assert [t["text"] for t in tokens if t["text"] in ("我", "在")] == ["我", "在"]
    assert tokens[-1]["special"]


def test_tokenize_batch_without_special_tokens_and_with_the_passage_prefix(
    client: httpx.Client, tokenizer: Any
) -> None:
    body = {"inputs": TEXTS, "add_special_tokens": False, "prompt_name": "passage"}
    answer = client.post("/tokenize", json=body).json()
    expected = [
        tokenizer("passage: " + text, add_special_tokens=False)["input_ids"] for text in TEXTS
    ]
    assert [[t["id"] for t in tokens] for tokens in answer] == expected
    assert not any(t["special"] for tokens in answer for t in tokens)


def test_decode_inverts_tokenize(client: httpx.Client, tokenizer: Any) -> None:
    tokens = client.post("/tokenize", json={"inputs": TEXTS}).json()
    ids = [[t["id"] for t in row] for row in tokens]
    assert client.post("/decode", json={"ids": ids}).json() == [
        tokenizer.decode(row, skip_special_tokens=True) for row in ids
    ]
    assert "hello world" in client.post("/decode", json={"ids": ids[0]}).json()[0]
    with_special = client.post("/decode", json={"ids": ids[0], "skip_special_tokens": False})
    assert with_special.json()[0].startswith(tokenizer.cls_token)


def test_decode_refuses_an_id_outside_the_vocabulary(client: httpx.Client, tokenizer: Any) -> None:
    size = len(tokenizer)
    response = client.post("/decode", json={"ids": [[1, 2], [3, size]]})
    assert response.status_code == 422
    assert response.json() == {
        "error": f"ids[1][1]: token id {size} is not in the vocabulary (size {size})",
        "error_type": "Validation",
    }


# TEI's clients, unchanged, given the server's base URL.


@pytest.fixture
def hub_client_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests run with HF_HUB_OFFLINE=1 (no internet); huggingface_hub then refuses every
    URL, the local server's too, once it reads the variable at import."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.usefixtures("hub_client_online")
def test_huggingface_hub_inference_client_feature_extraction(
    server: str, pipeline: EmbeddingPipeline
) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=server)
    vectors = client.feature_extraction("我在中国")
    assert vectors.dtype == np.float32 and vectors.shape == (1, pipeline.dim)
    np.testing.assert_allclose(vectors, pipeline.embed(["我在中国"]).vectors, atol=1e-6)
    raw = client.feature_extraction("我在中国", normalize=False, prompt_name="passage")
    expected = pipeline.embed(["我在中国"], normalize=False, text_type="passage").vectors
    np.testing.assert_allclose(raw, expected, atol=1e-5)


@pytest.mark.usefixtures("hub_client_online")
def test_huggingface_hub_client_sends_the_api_key(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    server = start_server(api_key="secret")
    vectors = InferenceClient(base_url=server, api_key="secret").feature_extraction("hi")
    np.testing.assert_allclose(vectors, pipeline.embed(["hi"]).vectors, atol=1e-6)
    with pytest.raises(HfHubHTTPError) as raised:
        InferenceClient(base_url=server, api_key="wrong").feature_extraction("hi")
    assert raised.value.response.status_code == 401


def test_langchain_huggingface_endpoint_embeddings(
    server: str, pipeline: EmbeddingPipeline
) -> None:
    # Not in the dev extra: langchain-huggingface 1.2.2+ refuses a URL as `model` (so it reaches
    # no self-hosted TEI), and 1.2.1, the last that takes one, needs huggingface_hub < 2.
    langchain_huggingface = pytest.importorskip("langchain_huggingface")
    HuggingFaceEndpointEmbeddings = langchain_huggingface.HuggingFaceEndpointEmbeddings

    embeddings = HuggingFaceEndpointEmbeddings(model=server)
    documents = embeddings.embed_documents(TEXTS)
    np.testing.assert_allclose(documents, pipeline.embed(TEXTS).vectors, atol=1e-6)
    query = embeddings.embed_query("我在中国")
    np.testing.assert_allclose(query, pipeline.embed(["我在中国"]).vectors[0], atol=1e-6)


def test_llama_index_text_embeddings_inference(server: str, pipeline: EmbeddingPipeline) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    model = TextEmbeddingsInference(model_name="me5-small", base_url=server, embed_batch_size=2)
    vectors = model.get_text_embedding_batch(TEXTS + ["第三句"])
    expected = pipeline.embed(TEXTS + ["第三句"]).vectors
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    np.testing.assert_allclose(
        model.get_query_embedding("我在中国"), pipeline.embed(["我在中国"]).vectors[0], atol=1e-6
    )
