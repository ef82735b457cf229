"""`"rerank": "geodesic"` in POST /search, against a real server and an in-process check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from baihua.app.main import create_app
from baihua.encoder import EmbeddingPipeline
from baihua.index import FaissStore, GeodesicReranker, KnnGraph
from tests.app.conftest import base_settings, running_server

TEXTS = [f"hello world {i} {'bert ' * (i % 4)} 的一是{i % 7}" for i in range(30)]
QUERY = "hello bert 的一"
GRAPH_K = 4


@pytest.fixture
def served(
    tiny_bert: Path, pipeline: EmbeddingPipeline, tmp_path: Path
) -> Iterator[tuple[httpx.Client, FastAPI, FaissStore]]:
    """A server over an in-memory store the test can read, with 30 documents."""
    settings = base_settings(tiny_bert, data_dir=tmp_path / "data", geodesic_k=GRAPH_K)
    store = FaissStore(pipeline.dim)
    app = create_app(settings, pipeline, store)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/documents", json={"documents": [{"text": t} for t in TEXTS]})
        assert response.status_code == 201
        yield client, app, store
    store.close()


def reranker_of(app: FastAPI) -> GeodesicReranker:
    reranker: GeodesicReranker = app.state.service.documents.reranker
    return reranker


def search(client: httpx.Client, **body: object) -> list[dict]:
    response = client.post("/search", json={"query": QUERY, **body})
    assert response.status_code == 200, response.text
    hits: list[dict] = response.json()["results"]
    return hits


def test_geodesic_hits_are_the_graphs_ranking_of_the_cosine_candidates(
    served: tuple[httpx.Client, FastAPI, FaissStore], pipeline: EmbeddingPipeline
) -> None:
    client, app, store = served
    search(client, rerank="geodesic", top_k=5)  # the first one starts the graph build
    assert reranker_of(app).wait(timeout=30)
    hits = search(client, rerank="geodesic", top_k=5)

    ids = store.ids()
    graph = KnnGraph.build(ids, store.vectors(ids), k=GRAPH_K)
    query = pipeline.embed([QUERY], text_type="query").vectors
    candidates = store.search(query, 50)[0]
    order, distance = graph.rank([h.id for h in candidates], [h.score for h in candidates], top_k=5)
    assert [h["id"] for h in hits] == [candidates[i].id for i in order]
    np.testing.assert_allclose([h["geodesic"] for h in hits], distance, rtol=1e-6)
    np.testing.assert_allclose(
        [h["score"] for h in hits], [candidates[i].score for i in order], atol=1e-6
    )


def test_plain_search_has_no_geodesic_distance(
    served: tuple[httpx.Client, FastAPI, FaissStore],
) -> None:
    client, _, _ = served
    hits = search(client, top_k=3)
    assert [h["geodesic"] for h in hits] == [None] * 3
    assert search(client, top_k=3, rerank="none") == hits


def test_writes_refresh_the_graph(served: tuple[httpx.Client, FastAPI, FaissStore]) -> None:
    client, app, store = served
    search(client, rerank="geodesic")
    reranker = reranker_of(app)
    assert reranker.wait(timeout=30) and 3 in reranker.graph
    assert client.delete("/documents/3").status_code == 200
    response = client.post("/documents", json={"documents": [{"id": 99, "text": QUERY}]})
    assert response.status_code == 201
    assert reranker.wait(timeout=30) and not reranker.stale
    assert 3 not in reranker.graph and 99 in reranker.graph
    hits = search(client, rerank="geodesic", top_k=30)
    assert 3 not in {h["id"] for h in hits} and hits[0]["id"] == 99


def test_unknown_rerank_is_a_422_naming_the_field(
    served: tuple[httpx.Client, FastAPI, FaissStore],
) -> None:
    client, _, _ = served
    response = client.post("/search", json={"query": QUERY, "rerank": "isomap"})
    assert response.status_code == 422
    assert "rerank" in response.text
