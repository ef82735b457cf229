"""The service on ONNX Runtime int8: /embed close to torch fp32, /search works."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from baihua.encoder import Encoder, l2_normalize
from baihua.encoder.backends.calibration import MIN_COSINE
from tests.app.conftest import StartServer
from tests.conftest import MAX_LENGTH

TEXTS = ["hello world", "我在中国", "bert 的 一", "a b c"]


def test_embed_and_search_on_int8(start_server: StartServer, tiny_bert: Path, tmp_path: Path):
    url = start_server(pipeline=None, backend="onnx-int8", cache_dir=tmp_path / "cache")
    reference = Encoder(str(tiny_bert), pooling="last-avg", max_length=MAX_LENGTH, device="cpu")
    with httpx.Client(base_url=url, timeout=60) as client:
        body = client.post("/embed", json={"texts": TEXTS}).json()
        expected = l2_normalize(reference.encode(TEXTS))
        assert (np.array(body["embeddings"]) * expected).sum(1).min() >= MIN_COSINE
        added = client.post("/documents", json={"documents": [{"text": t} for t in TEXTS]})
        assert added.status_code == 201, added.text
        hits = client.post("/search", json={"query": "我在中国", "top_k": 1}).json()["results"]
        assert hits[0]["text"] == "我在中国"
