"""Hostile and oversized input against the real server: 4xx naming the problem, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from baihua.encoder import Embedded, EmbeddingPipeline
from tests.app.conftest import StartServer

JSON = {"content-type": "application/json"}


def post_raw(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    """POST `body` as Python's json.dumps writes it: NaN and lone surrogates included, as the
    server's parser reads them."""
    return http.post(path, content=json.dumps(body), headers=JSON)


def error_locs(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {".".join(map(str, e["loc"][1:])): e["msg"] for e in response.json()["detail"]}


def test_a_body_over_the_limit_is_413_before_the_api_key_is_checked(
    start_server: StartServer,
) -> None:
    url = start_server(api_key="secret", max_request_bytes=2048)
    body = json.dumps({"texts": ["x" * 3000]}).encode()
    response = httpx.post(f"{url}/embed", content=body, headers=JSON)
    assert response.status_code == 413, response.text
    assert "max_request_bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream is counted as it comes
        yield b'{"texts": ["'
        for _ in range(10):
            yield b"x" * 500
        yield b'"]}'

    streamed = httpx.post(f"{url}/embed", content=chunks())
    assert streamed.status_code == 413
    openai = httpx.post(f"{url}/v1/embeddings", content=body)
    assert openai.status_code == 413 and "max_request_bytes" in openai.json()["error"]["message"]
    # under the limit, the key is checked as before
    assert httpx.post(f"{url}/embed", json={"texts": ["ok"]}).status_code == 401


@pytest.fixture
def client(start_server: StartServer) -> Iterator[httpx.Client]:
    url = start_server(max_payload_bytes=1024, max_payload_depth=8, max_search_hits=100)
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("payload", "loc", "message"),
    [
        ({"big": "x" * 2000}, "documents.0.payload", "max_payload_bytes"),
        ({"deep": nested(20)}, "documents.0.payload.deep", "max_payload_depth"),
        ({"bad": "a\ud800"}, "documents.0.payload.bad", "surrogate"),
        ({"ok": 1, "\udfff": 1}, "documents.0.payload", "not valid Unicode"),
        ({"n": float("nan")}, "documents.0.payload.n", "not a JSON number"),
        ({"n": [1, float("inf")]}, "documents.0.payload.n.1", "not a JSON number"),
        ({"n": 2**80}, "documents.0.payload.n", "64 bits"),
    ],
)
def test_payloads_that_could_not_be_read_back_are_refused_at_write_time(
    client: httpx.Client, payload: dict[str, Any], loc: str, message: str
) -> None:
    body = {"documents": [{"text": "hello", "payload": payload}]}
    errors = error_locs(post_raw(client, "/documents", body))
    assert len(errors) == 1, errors
    ((where, why),) = errors.items()
    assert where.startswith(loc) and message in why, errors


def test_an_accepted_payload_at_the_depth_limit_reads_back(client: httpx.Client) -> None:
    payload = {"deep": nested(7)}
    added = client.post("/documents", json={"documents": [{"text": "hello", "payload": payload}]})
    assert added.status_code == 201, added.text
    id = added.json()["ids"][0]
    assert client.get(f"/documents/{id}").json()["payload"] == payload
    hits = client.post("/search", json={"query": "hello", "top_k": 5}).json()["results"]
    assert hits[0]["payload"] == payload


def test_a_lone_surrogate_in_a_text_is_422_naming_the_text(client: httpx.Client) -> None:
    errors = error_locs(post_raw(client, "/embed", {"texts": ["fine", "bad \ud800"]}))
    assert list(errors) == ["texts.1"] and "surrogate" in errors["texts.1"]
    assert "query" in error_locs(post_raw(client, "/search", {"query": "\udc00", "top_k": 3}))


def test_queries_times_top_k_is_capped(client: httpx.Client) -> None:
    errors = error_locs(client.post("/search", json={"queries": ["a", "b"], "top_k": 51}))
    assert "max_search_hits" in errors["top_k"]
    assert client.post("/search", json={"queries": ["a", "b"], "top_k": 50}).status_code == 200


def test_a_response_over_max_response_bytes_is_refused(start_server: StartServer) -> None:
    url = start_server(max_response_bytes=4096)
    documents = [{"text": f"hello {i}", "payload": {"pad": "x" * 500}} for i in range(20)]
    assert httpx.post(f"{url}/documents", json={"documents": documents}).status_code == 201
    response = httpx.post(f"{url}/search", json={"query": "hello", "top_k": 20})
    assert "max_response_bytes" in error_locs(response)["top_k"]
    assert httpx.post(f"{url}/search", json={"query": "hello", "top_k": 3}).status_code == 200


def test_a_filter_with_invalid_json_values_is_422(client: httpx.Client) -> None:
    body = {"query": "hello", "filter": {"x": float("nan")}}
    assert "filter.x" in error_locs(post_raw(client, "/search", body))


HOSTILE_BODIES: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"texts"',
    b"\xff\xfe\x00garbage",
    b'{"texts": ["\xff\xfe"]}',  # invalid UTF-8 inside a string
    b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser's recursion
    b'{"texts": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
    b'{"texts": ["a"], "whiten": NaN}',
    b'{"texts": [1e999]}',
    b'{"texts": ["\\ud800\\udc00\\udfff"]}',
    b'{"query": "x", "top_k": 1e30}',
    b'{"query": "x", "top_k": 99999999999999999999999}',
    b'{"query": "x", "filter": {"a": {"b": {"c": [NaN, Infinity]}}}}',
    b'{"documents": [{"id": 99999999999999999999, "text": "a"}]}',
    b'{"documents": [{"id": -1, "text": "a"}]}',
    b'{"documents": [{"text": "a", "payload": {"k": -Infinity}}]}',
    b'{"documents": [{"text": "\\u0000"}]}',
    b'{"input": [[1, 2, 3]], "model": "x"}',
    b'{"input": "\\udbff", "model": "x"}',
    b'{"input": "ok", "model": "\\ud800", "user": "\\udc00"}',
]


@pytest.mark.parametrize("path", ["/embed", "/search", "/documents", "/v1/embeddings"])
def test_no_hostile_body_gets_a_5xx(client: httpx.Client, path: str) -> None:
    for body in HOSTILE_BODIES:
        response = client.post(path, content=body, headers=JSON)
        assert response.status_code < 500, (body[:80], response.status_code, response.text[:300])
        response.json()  # every error body is valid JSON


def test_hostile_paths_and_ids_are_4xx(client: httpx.Client) -> None:
    for id in ["9223372036854775808", "-1", "1e3", "%ff", "x" * 5000, "٣"]:
        assert 400 <= client.get(f"/documents/{id}").status_code < 500
        assert 400 <= client.delete(f"/documents/{id}").status_code < 500


class PoisonPipeline(EmbeddingPipeline):
    """The real pipeline, except that its model fails on any batch holding the text "poison"
    (as a model fails on an input it cannot take)."""

    def __init__(self, inner: EmbeddingPipeline) -> None:
        super().__init__(inner.encoder, inner.transform)

    def embed(self, texts: Sequence[str], **options: Any) -> Embedded:
        if "poison" in texts:
            raise RuntimeError("the model cannot take this input")
        return super().embed(texts, **options)


def test_a_poison_text_fails_only_its_own_request_in_a_shared_batch(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    url = start_server(pipeline=PoisonPipeline(pipeline), max_wait_ms=50, max_batch_size=512)
    bodies = [{"texts": [f"hello {i}", "我在中国"]} for i in range(60)]
    bodies[30] = {"texts": ["fine", "poison"]}
    with httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda body: http.post("/embed", json=body), bodies))
    poisoned = responses.pop(30)
    assert list(error_locs(poisoned)) == ["texts.1"]
    assert "cannot take" in error_locs(poisoned)["texts.1"]
    assert [r.status_code for r in responses] == [200] * 59
    for body, response in zip(bodies[:30] + bodies[31:], responses, strict=True):
        expected = pipeline.embed(body["texts"]).vectors
        assert abs(response.json()["embeddings"][0][0] - expected[0][0]) < 1e-5


def test_a_payload_update_is_checked_as_a_written_payload(client: httpx.Client) -> None:
    id = client.post("/documents", json={"documents": [{"text": "hello"}]}).json()["ids"][0]
    for payload, message in [({"n": float("nan")}, "not a JSON number"), (nested(20), "depth")]:
        body = json.dumps({"payload": payload})
        errors = error_locs(client.patch(f"/documents/{id}", content=body, headers=JSON))
        assert any(where.startswith("payload") and message in why for where, why in errors.items())
    assert client.get(f"/documents/{id}").json()["payload"] == {}
