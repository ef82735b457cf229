"""The HTTP document and search routes unchanged on the Milvus backend (the embedded engine,
started by the server itself, and a Milvus server on a loopback port): the FAISS-backed tests of
test_documents.py, run again."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from baihua.app.main import create_app
from baihua.encoder import EmbeddingPipeline
from tests.app import test_documents
from tests.app.conftest import StartServer, base_settings, running_server

ROUTE_TESTS: list[Callable[..., None]] = [
    test_documents.test_added_documents_can_be_read_back,
    test_documents.test_documents_are_embedded_as_passages,
    test_documents.test_omitted_ids_are_assigned_above_the_largest,
    test_documents.test_an_existing_id_is_409_and_changes_nothing,
    test_documents.test_upsert_replaces_an_existing_document,
    test_documents.test_delete_removes_the_document_and_missing_ids_are_404,
    test_documents.test_search_returns_the_top_k_by_cosine_with_texts_and_payloads,
    test_documents.test_search_filter_keeps_only_matching_payloads,
    test_documents.test_search_filter_operators_and_a_malformed_filter,
    test_documents.test_search_on_an_empty_index_finds_nothing,
    test_documents.test_repeated_ids_in_one_request_are_409,
    test_documents.test_list_pages_through_every_document_with_a_cursor,
    test_documents.test_list_and_count_take_a_json_filter,
    test_documents.test_batch_get_reports_the_missing_ids,
    test_documents.test_batch_delete_by_ids_and_by_filter,
    test_documents.test_payload_update_keeps_the_vector,
]


@pytest.fixture(params=["embedded", "server"])
def milvus_client(
    request: pytest.FixtureRequest, start_server: StartServer, tmp_path: Path
) -> Iterator[httpx.Client]:
    """The service on the embedded engine (a file it starts itself), or on the Milvus server
    (a collection of its own there)."""
    if request.param == "server":
        uri = request.getfixturevalue("milvus_server")
        collection = f"routes_{uuid.uuid4().hex}"
        url = start_server(index_backend="milvus", milvus_uri=uri, milvus_collection=collection)
    else:
        url = start_server(index_backend="milvus", milvus_uri=str(tmp_path / "m" / "milvus.db"))
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("route_test", ROUTE_TESTS, ids=[t.__name__[5:] for t in ROUTE_TESTS])
def test_route_on_milvus(
    route_test: Callable[..., None], milvus_client: httpx.Client, pipeline: EmbeddingPipeline
) -> None:
    available: dict[str, Any] = {"client": milvus_client, "pipeline": pipeline}
    route_test(**{name: available[name] for name in inspect.signature(route_test).parameters})


def test_documents_survive_a_restart_on_the_milvus_backend(
    tiny_bert: Path, pipeline: EmbeddingPipeline, tmp_path: Path
) -> None:
    settings = base_settings(tiny_bert, data_dir=tmp_path, index_backend="milvus")
    with running_server(create_app(settings, pipeline)) as url:
        assert (
            test_documents.add(httpx.Client(base_url=url), test_documents.DOCS).status_code == 201
        )
        httpx.delete(f"{url}/documents/1")
    assert (tmp_path / "index" / "milvus.db").exists()  # the default: <data_dir>/index/milvus.db
    with running_server(create_app(settings, pipeline)) as url:
        assert httpx.get(f"{url}/documents/2").json()["payload"] == {"lang": "zh"}
        assert httpx.get(f"{url}/documents/1").status_code == 404
        hits = httpx.post(f"{url}/search", json={"query": "hello world"}).json()["results"]
        assert sorted(hit["id"] for hit in hits) == [2, 3]
        ids = httpx.post(f"{url}/documents", json={"documents": [{"text": "x"}]}).json()["ids"]
        assert ids == [4]


def test_milvus_settings_without_the_milvus_backend_are_refused(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match="milvus_uri set but index_backend is 'faiss'"):
        base_settings(tiny_bert, milvus_uri="http://localhost:19530")
