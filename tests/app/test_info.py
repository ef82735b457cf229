"""GET /info and GET /health (TEI's names) on a real server."""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path

import httpx
import pytest

from baihua.app.main import create_app
from baihua.encoder import EmbeddingPipeline
from baihua.serving.settings import Settings
from tests.app.conftest import StartServer, base_settings, running_server, wait_until
from tests.conftest import MAX_LENGTH, WHITENED_DIM


def test_info_describes_the_served_pipeline(client: httpx.Client) -> None:
    info = client.get("/info").json()
    assert info["model"] == info["model_id"]
    assert info["pooling"] == "last-avg"
    assert info["dim"] == WHITENED_DIM
    assert info["encoder_dim"] == 32
    assert info["max_length"] == info["max_input_length"] == MAX_LENGTH
    assert (info["query_prefix"], info["passage_prefix"]) == ("query: ", "passage: ")
    assert info["whitening"] == {
        "method": "whitening",
        "n_components": WHITENED_DIM,
        "beta": 1.0,
        "gamma": 1.0,
    }
    assert (info["backend"], info["dtype"], info["device"]) == ("torch", "float32", "cpu")
    assert info["version"] == importlib.metadata.version("baihua")
    assert info["max_client_batch_size"] == 256


def test_info_without_a_transform_reports_the_encoder_dimension(
    start_server: StartServer, pipeline: EmbeddingPipeline
) -> None:
    url = start_server(EmbeddingPipeline(pipeline.encoder), max_texts_per_request=7)
    info = httpx.get(f"{url}/info").json()
    assert info["whitening"] is None
    assert info["dim"] == info["encoder_dim"] == 32
    assert info["max_client_batch_size"] == 7


def test_info_needs_the_api_key_and_health_does_not(start_server: StartServer) -> None:
    url = start_server(api_key="secret")
    assert httpx.get(f"{url}/info").status_code == 401
    assert httpx.get(f"{url}/info", headers={"Authorization": "Bearer secret"}).status_code == 200
    assert httpx.get(f"{url}/health").json() == {"status": "ready"}


def test_health_is_503_until_the_model_is_loaded(
    tiny_bert: Path, pipeline: EmbeddingPipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = threading.Event()

    def slow_build(settings: Settings) -> EmbeddingPipeline:
        loaded.wait(timeout=30)
        return pipeline

    monkeypatch.setattr("baihua.serving.service.build_pipeline", slow_build)
    with running_server(
        create_app(base_settings(tiny_bert, data_dir=tmp_path)), ready=False
    ) as url:
        early = httpx.get(f"{url}/health")
        assert early.status_code == 503 and "loading" in early.json()["status"]
        assert httpx.get(f"{url}/info").status_code == 503
        loaded.set()
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, "never healthy")
        assert httpx.get(f"{url}/info").json()["dim"] == WHITENED_DIM
