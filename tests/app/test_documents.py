"""Documents and search against a real server: ids, conflicts, filters, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from baihua.app.main import create_app
from baihua.encoder import EmbeddingPipeline
from tests.app.conftest import base_settings, running_server

DOCS = [
    {"id": 1, "text": "hello world", "payload": {"lang": "en"}},
    {"id": 2, "text": "我在中国", "payload": {"lang": "zh"}},
    {"id": 3, "text": "bert bert bert", "payload": {"lang": "en", "kind": "model"}},
]


def add(client: httpx.Client, documents: list[dict], **extra: object) -> httpx.Response:
    return client.post("/documents", json={"documents": documents, **extra})


def test_added_documents_can_be_read_back(client: httpx.Client) -> None:
    response = add(client, DOCS)
    assert response.status_code == 201
    assert response.json() == {"ids": [1, 2, 3], "truncated": [False] * 3}
    assert client.get("/documents/2").json() == {**DOCS[1]}


def test_documents_are_embedded_as_passages(
    client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    add(client, DOCS)
    passage = pipeline.embed([DOCS[1]["text"]], text_type="passage").vectors[0]
    query = pipeline.embed(["我在中国"], text_type="query").vectors[0]
    assert float(query @ passage) < 0.999  # the prefixes make a difference
    hits = client.post("/search", json={"query": "我在中国", "top_k": 3}).json()["results"]
    score = next(hit["score"] for hit in hits if hit["id"] == 2)
    assert score == pytest.approx(float(query @ passage), abs=1e-5)


def test_omitted_ids_are_assigned_above_the_largest(client: httpx.Client) -> None:
    add(client, DOCS)
    response = add(client, [{"text": "one"}, {"id": 10, "text": "two"}, {"text": "three"}])
    assert response.json()["ids"] == [11, 10, 12]
    assert add(client, [{"text": "four"}]).json()["ids"] == [13]
    assert client.get("/documents/12").json()["text"] == "three"


def test_an_existing_id_is_409_and_changes_nothing(client: httpx.Client) -> None:
    add(client, DOCS)
    response = add(client, [{"id": 4, "text": "new"}, {"id": 2, "text": "replaced?"}])
    assert response.status_code == 409
    assert "[2]" in response.json()["detail"]
    assert client.get("/documents/4").status_code == 404
    assert client.get("/documents/2").json()["text"] == "我在中国"


def test_upsert_replaces_an_existing_document(client: httpx.Client) -> None:
    add(client, DOCS)
    response = add(client, [{"id": 2, "text": "hello", "payload": {"v": 2}}], upsert=True)
    assert response.status_code == 201
    assert client.get("/documents/2").json() == {"id": 2, "text": "hello", "payload": {"v": 2}}
    hits = client.post("/search", json={"query": "我在中国", "top_k": 3}).json()["results"]
    assert [hit["id"] for hit in hits].count(2) == 1


def test_repeated_ids_in_one_request_are_409(client: httpx.Client) -> None:
    response = add(client, [{"id": 5, "text": "a"}, {"id": 5, "text": "b"}])
    assert response.status_code == 409
    assert response.json()["detail"] == "ids repeat within the request: [5]"
    assert client.get("/documents/5").status_code == 404


def test_delete_removes_the_document_and_missing_ids_are_404(client: httpx.Client) -> None:
    add(client, DOCS)
    assert client.delete("/documents/1").json() == {"id": 1, "deleted": True}
    assert client.get("/documents/1").status_code == 404
    assert client.delete("/documents/1").status_code == 404
    hits = client.post("/search", json={"query": "hello world", "top_k": 10}).json()["results"]
    assert sorted(hit["id"] for hit in hits) == [2, 3]


def expected_ranking(pipeline: EmbeddingPipeline, query: str) -> list[tuple[float, int]]:
    """(score, id) of DOCS for `query`, best first, computed in process."""
    q = pipeline.embed([query]).vectors[0]
    passages = pipeline.embed([d["text"] for d in DOCS], text_type="passage").vectors
    return sorted(zip((passages @ q).tolist(), [d["id"] for d in DOCS], strict=True), reverse=True)


def test_search_returns_the_top_k_by_cosine_with_texts_and_payloads(
    client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    add(client, DOCS)
    results = client.post("/search", json={"query": "hello world", "top_k": 2}).json()
    expected = expected_ranking(pipeline, "hello world")[:2]
    hits = results["results"]
    assert [hit["id"] for hit in hits] == [i for _, i in expected]
    np.testing.assert_allclose([hit["score"] for hit in hits], [s for s, _ in expected], atol=1e-5)
    by_id = {d["id"]: d for d in DOCS}
    assert [(h["text"], h["payload"]) for h in hits] == [
        (by_id[h["id"]]["text"], by_id[h["id"]]["payload"]) for h in hits
    ]
    assert results["truncated"] is False


def test_search_filter_keeps_only_matching_payloads(client: httpx.Client) -> None:
    add(client, DOCS)
    body = {"query": "我在中国", "top_k": 10, "filter": {"lang": "en"}}
    hits = client.post("/search", json=body).json()["results"]
    assert sorted(hit["id"] for hit in hits) == [1, 3]


def test_search_filter_operators_and_a_malformed_filter(client: httpx.Client) -> None:
    add(client, DOCS)
    body = {"query": "我在中国", "top_k": 10, "filter": {"lang": {"$in": ["en"]}}}
    hits = client.post("/search", json=body).json()["results"]
    assert sorted(hit["id"] for hit in hits) == [1, 3]

    body["filter"] = {"lang": {"$like": "e%"}}
    response = client.post("/search", json=body)
    assert response.status_code == 422
    assert "unknown operator '$like'" in response.json()["detail"][0]["msg"]


def test_search_with_queries_returns_a_list_per_query(
    client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    add(client, DOCS)
    queries = ["hello world", "bert bert bert", " ".join(["hello"] * 40)]
    results = client.post("/search", json={"queries": queries, "top_k": 1}).json()
    expected = [[expected_ranking(pipeline, query)[0][1]] for query in queries]
    assert [[hit["id"] for hit in hits] for hits in results["results"]] == expected
    assert results["truncated"] == [False, False, True]


@pytest.mark.parametrize(
    "body", [{"top_k": 3}, {"query": "a", "queries": ["b"], "top_k": 3}, {"query": "a", "top_k": 0}]
)
def test_search_needs_exactly_one_query_field_and_a_positive_top_k(
    client: httpx.Client, body: dict
) -> None:
    assert client.post("/search", json=body).status_code == 422


def test_search_on_an_empty_index_finds_nothing(client: httpx.Client) -> None:
    assert client.post("/search", json={"query": "hello"}).json()["results"] == []


def test_documents_survive_a_restart_on_the_same_data_dir(
    tiny_bert: Path, pipeline: EmbeddingPipeline, tmp_path: Path
) -> None:
    settings = base_settings(tiny_bert, data_dir=tmp_path)
    with running_server(create_app(settings, pipeline)) as url:
        assert add(httpx.Client(base_url=url), DOCS).status_code == 201
        httpx.delete(f"{url}/documents/1")
    with running_server(create_app(settings, pipeline)) as url:
        assert httpx.get(f"{url}/documents/2").json()["payload"] == {"lang": "zh"}
        assert httpx.get(f"{url}/documents/1").status_code == 404
        hits = httpx.post(f"{url}/search", json={"query": "hello world"}).json()["results"]
        assert sorted(hit["id"] for hit in hits) == [2, 3]
        ids = httpx.post(f"{url}/documents", json={"documents": [{"text": "x"}]}).json()["ids"]
        assert ids == [4]


def many(n: int) -> list[dict[str, object]]:
    return [{"id": i, "text": f"doc {i}", "payload": {"g": i % 3, "n": i}} for i in range(n)]


def test_list_pages_through_every_document_with_a_cursor(client: httpx.Client) -> None:
    add(client, many(7))
    seen, after = [], None
    for _ in range(10):
        params = {"limit": 3} if after is None else {"limit": 3, "after": after}
        page = client.get("/documents", params=params).json()
        seen += [doc["id"] for doc in page["documents"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == list(range(7))


def test_list_and_count_take_a_json_filter(client: httpx.Client) -> None:
    add(client, many(7))
    page = client.get("/documents", params={"filter": json.dumps({"g": 1})}).json()
    assert [doc["id"] for doc in page["documents"]] == [1, 4]
    assert page["documents"][0] == {"id": 1, "text": "doc 1", "payload": {"g": 1, "n": 1}}
    assert client.get("/documents/count").json() == {"count": 7}
    assert client.get("/documents/count", params={"filter": '{"g": 0}'}).json() == {"count": 3}
    bad = client.get("/documents/count", params={"filter": "[1]"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["msg"] == "filter: must be a JSON object of payload key -> value"


def test_batch_get_reports_the_missing_ids(client: httpx.Client) -> None:
    add(client, many(3))
    body = client.post("/documents/get", json={"ids": [2, 9, 0]}).json()
    assert [doc["id"] for doc in body["documents"]] == [2, 0]
    assert body["missing"] == [9]


def test_batch_delete_by_ids_and_by_filter(client: httpx.Client) -> None:
    add(client, many(9))
    assert client.post("/documents/delete", json={"ids": [0, 1, 99]}).json() == {"deleted": 2}
    assert client.post("/documents/delete", json={"filter": {"g": 2}}).json() == {"deleted": 3}
    remaining = [doc["id"] for doc in client.get("/documents").json()["documents"]]
    assert remaining == [3, 4, 6, 7]
    hits = client.post("/search", json={"query": "doc", "top_k": 10}).json()["results"]
    assert sorted(hit["id"] for hit in hits) == remaining
    refused = client.post("/documents/delete", json={"filter": {}})
    assert refused.status_code == 422
    both = client.post("/documents/delete", json={"ids": [3], "filter": {"g": 0}})
    assert both.json()["detail"][0]["msg"] == "body: give exactly one of `ids` or `filter`"


def test_payload_update_keeps_the_vector(client: httpx.Client) -> None:
    add(client, DOCS)
    hits = client.post("/search", json={"query": "我在中国", "top_k": 3}).json()["results"]
    before = next(hit for hit in hits if hit["id"] == 2)
    updated = client.patch("/documents/2", json={"payload": {"lang": "zh-CN"}})
    assert updated.json() == {"id": 2, "text": "我在中国", "payload": {"lang": "zh-CN"}}
    after = client.post(
        "/search", json={"query": "我在中国", "top_k": 1, "filter": {"lang": "zh-CN"}}
    ).json()["results"][0]
    assert after["id"] == 2 and after["score"] == pytest.approx(before["score"], abs=1e-6)
    assert client.patch("/documents/77", json={"payload": {}}).status_code == 404
