"""Health, readiness, metrics, API key and docs of a real server."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest

from baihua.app.main import create_app
from baihua.encoder import EmbeddingPipeline
from baihua.serving.settings import Settings
from tests.app.conftest import StartServer, base_settings, running_server, wait_until


def test_healthz_is_200(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_503_until_the_model_is_loaded(
    tiny_bert: Path, pipeline: EmbeddingPipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = threading.Event()

    def slow_build(settings: Settings) -> EmbeddingPipeline:
        loaded.wait(timeout=30)
        return pipeline

    monkeypatch.setattr("baihua.serving.service.build_pipeline", slow_build)
    app = create_app(base_settings(tiny_bert, data_dir=tmp_path))
    with running_server(app, ready=False) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        not_ready = httpx.get(f"{url}/readyz")
        assert not_ready.status_code == 503
        assert "loading" in not_ready.json()["status"]
        early = httpx.post(f"{url}/embed", json={"texts": ["hi"]})
        assert early.status_code == 503 and "Retry-After" in early.headers
        loaded.set()
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, "never ready")
        assert httpx.post(f"{url}/embed", json={"texts": ["hi"]}).status_code == 200


def test_readyz_reports_a_model_that_failed_to_load(tmp_path: Path) -> None:
    settings = Settings(model=str(tmp_path / "no-such-model"), data_dir=tmp_path)
    with running_server(create_app(settings), ready=False) as url:
        wait_until(lambda: "failed" in httpx.get(f"{url}/readyz").text, "no failure reported")
        response = httpx.get(f"{url}/readyz")
        assert response.status_code == 503
        assert "no-such-model" in response.json()["status"]
        assert httpx.get(f"{url}/healthz").status_code == 200


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(label_text)}\}})? (\S+)$"
    if labels:
        pattern = rf"^{re.escape(name)}\{{{re.escape(label_text)}\}} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name} {labels} not in metrics"
    return float(match.group(1))


def test_metrics_count_requests_batches_queue_and_index(client: httpx.Client) -> None:
    client.post("/embed", json={"texts": ["a", "b", "c"]})
    client.post("/embed", json={"texts": []})
    client.post("/documents", json={"documents": [{"text": "x"}, {"text": "y"}]})
    client.get("/documents/12345")
    text = client.get("/metrics").text
    requests = "baihua_http_requests_total"
    assert metric(text, requests, method="POST", route="/embed", status="200") == 1
    assert metric(text, requests, method="POST", route="/embed", status="422") == 1
    assert metric(text, requests, method="GET", route="/documents/{id}", status="404") == 1
    latency = "baihua_http_request_duration_seconds_count"
    assert metric(text, latency, method="POST", route="/embed", status="200") == 1
    assert metric(text, "baihua_encoder_batch_size_count") == 2
    assert metric(text, "baihua_encoder_batch_size_sum") == 5
    assert metric(text, "baihua_queue_depth") == 0
    assert metric(text, "baihua_index_documents") == 2
    assert metric(text, "baihua_truncated_texts_total") == 0


def test_metrics_of_two_apps_are_separate(start_server: StartServer) -> None:
    first, second = start_server(), start_server()
    httpx.get(f"{first}/healthz")
    text = httpx.get(f"{second}/metrics").text
    assert 'route="/healthz"' not in text


@pytest.mark.parametrize(
    "method,path",
    [("POST", "/embed"), ("POST", "/search"), ("GET", "/documents/1"), ("GET", "/metrics")],
)
def test_with_an_api_key_routes_need_the_bearer_header(
    start_server: StartServer, method: str, path: str
) -> None:
    url = start_server(api_key="secret")
    body = {"texts": ["hi"]} if path == "/embed" else {"query": "hi"}
    json = body if method == "POST" else None
    missing = httpx.request(method, f"{url}{path}", json=json)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = httpx.request(method, f"{url}{path}", json=json, headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401
    right = httpx.request(
        method, f"{url}{path}", json=json, headers={"Authorization": "Bearer secret"}
    )
    assert right.status_code in (200, 404)  # document 1 does not exist


def test_with_an_api_key_probes_and_docs_stay_open(start_server: StartServer) -> None:
    url = start_server(api_key="secret")
    for path in ("/healthz", "/readyz", "/health", "/docs", "/openapi.json"):
        assert httpx.get(f"{url}{path}").status_code == 200, path


def test_openapi_lists_every_endpoint(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {"/embed", "/search", "/documents", "/documents/{id}", "/v1/embeddings"}
    assert expected | {"/healthz", "/readyz", "/health", "/info", "/metrics"} <= set(paths)
    assert "swagger-ui" in client.get("/docs").text
