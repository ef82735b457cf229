"""`index_search_params` (BAIHUA_INDEX_SEARCH_PARAMS) reaches the FAISS index a real server
opens, and a restart on the same data directory applies the value given then."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from baihua.app.main import create_app
from baihua.encoder import EmbeddingPipeline
from baihua.index import FaissStore
from tests.app.conftest import base_settings, running_server
from tests.index.support import faiss_search_settings

TEXTS = [f"hello {w} world {i}" for i, w in enumerate("abcdefghijklmnopqrstuvwxyz")]


def served_store(app: FastAPI) -> FaissStore:
    store: FaissStore = app.state.service.documents.store
    return store


def test_the_setting_reaches_the_index_and_a_restart_changes_it(
    tiny_bert: Path, pipeline: EmbeddingPipeline, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = base_settings(
        tiny_bert, data_dir=data, index_factory="HNSW16", index_search_params="efSearch=77"
    )
    app = create_app(first, pipeline)
    with running_server(app) as url:
        response = httpx.post(f"{url}/documents", json={"documents": [{"text": t} for t in TEXTS]})
        assert response.status_code == 201
        assert faiss_search_settings(served_store(app)) == {"efSearch": 77, "efConstruction": 200}

    # the stop snapshots the index; the next start loads it with the settings given now
    then = first.model_copy(update={"index_search_params": "efSearch=99,efConstruction=40"})
    app = create_app(then, pipeline)
    with running_server(app) as url:
        assert faiss_search_settings(served_store(app)) == {"efSearch": 99, "efConstruction": 40}
        response = httpx.post(f"{url}/search", json={"query": TEXTS[3], "top_k": 3})
        assert response.status_code == 200 and len(response.json()["results"]) == 3


def test_the_setting_is_refused_beside_the_milvus_backend(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match="index_search_params set but index_backend is 'milvus'"):
        base_settings(tiny_bert, index_backend="milvus", index_search_params="nprobe=16")
