"""The service on a GPU: the default settings serve the torch backend on CUDA, with the CPU's
vectors and search results. Skipped on machines without CUDA (CI's)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from baihua.encoder import EmbeddingPipeline, Encoder
from tests.app.conftest import StartServer
from tests.conftest import MAX_LENGTH

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

TEXTS = ["hello world", "我在中国", "bert 的 一", "a b c", "一 " * 40]


def test_the_default_device_and_backend_serve_on_the_gpu(
    start_server: StartServer, tiny_bert: Path
) -> None:
    url = start_server(pipeline=None, device="auto", backend="auto")
    info = httpx.get(f"{url}/info").json()
    assert (info["backend"], info["dtype"], info["device"]) == ("torch", "float32", "cuda")

    response = httpx.post(f"{url}/embed", json={"texts": TEXTS}, timeout=30)
    assert response.status_code == 200
    on_cpu_pipeline = EmbeddingPipeline(
        Encoder(str(tiny_bert), pooling="last-avg", max_length=MAX_LENGTH, device="cpu")
    )
    on_cpu = on_cpu_pipeline.embed(TEXTS).vectors
    np.testing.assert_allclose(np.array(response.json()["embeddings"]), on_cpu, atol=1e-5)

    documents = [{"id": i, "text": text} for i, text in enumerate(TEXTS)]
    response = httpx.post(f"{url}/documents", json={"documents": documents}, timeout=30)
    assert response.status_code == 201
    passages = on_cpu_pipeline.embed(TEXTS, text_type="passage").vectors
    for text, query in zip(TEXTS, on_cpu, strict=True):
        body = {"query": text, "top_k": len(TEXTS), "mode": "dense"}
        hits = httpx.post(f"{url}/search", json=body, timeout=30).json()["results"]
        scores = passages @ query
        assert [h["id"] for h in hits] == np.argsort(-scores).tolist()
        np.testing.assert_allclose([h["score"] for h in hits], np.sort(scores)[::-1], atol=1e-5)
