"""A serving copy (`models prepare --serving-only`): the weights and the other exports go, the
vectors and the fingerprint stay, and the real server runs it with torch, transformers and nncf
made unimportable."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from baihua.core.errors import UsageError
from baihua.encoder import Encoder, ModelLoadError, l2_normalize
from baihua.encoder.models import model_token_limit, resolve_model
from baihua.encoder.serving_copy import SERVING_COPY_FILE, make_serving_copy
from tests.serve_process import ServeProcess

TEXTS = ["hello world", "你好世界", "a longer text about whitening and retrieval"]
# Installed by a sitecustomize.py on PYTHONPATH: the packages a serving copy must not need.
NO_TORCH = """
import importlib.abc, sys
BLOCKED = {"torch", "transformers", "nncf", "onnx", "sympy", "sklearn"}
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
sys.meta_path.insert(0, Blocked())
"""


@pytest.fixture
def cache(tmp_path: Path, tiny_bert: Path) -> Path:
    """A model cache holding a copy of the tiny BERT as a prepared model."""
    shutil.copytree(tiny_bert, tmp_path / "cache" / "models" / "tiny")
    return tmp_path / "cache"


def test_a_serving_copy_keeps_the_vectors_and_drops_the_rest(cache: Path) -> None:
    folder = cache / "models" / "tiny"
    full = Encoder(str(folder), device="cpu", backend="onnx-int8", cache_dir=cache)
    Encoder(str(folder), device="cpu", backend="openvino", cache_dir=cache)  # another export
    expected, fingerprint = full.encode(TEXTS), full.fingerprint
    copy, freed = make_serving_copy(full, cache)
    assert (copy.backend, copy.dtype, copy.fingerprint) == ("onnx-int8", "int8", fingerprint)
    assert not list(folder.glob("*.safetensors")) and (folder / SERVING_COPY_FILE).is_file()
    exports = cache / "models" / "tiny.onnx" / copy.export
    assert sorted(p.name for p in exports.iterdir() if p.is_dir()) == ["onnx-int8"]
    assert freed > 0
    served = Encoder(str(folder), device="cpu", backend="auto", cache_dir=cache)
    assert (served.backend, served.fingerprint) == ("onnx-int8", fingerprint)
    np.testing.assert_array_equal(served.encode(TEXTS), expected)
    for other in ("torch", "onnx", "openvino-int8"):
        with pytest.raises(ModelLoadError, match="serving copy of .* for backend onnx-int8"):
            Encoder(str(folder), device="cpu", backend=other, cache_dir=cache)


def test_only_a_model_prepared_in_the_cache_is_cut_down(tiny_bert: Path, tmp_path: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu", backend="onnx", cache_dir=tmp_path)
    with pytest.raises(UsageError, match="for models prepared in the cache"):
        make_serving_copy(encoder, tmp_path)
    assert (tiny_bert / "model.safetensors").is_file()
    torch_encoder = Encoder(str(tiny_bert), device="cpu", backend="torch", cache_dir=tmp_path)
    with pytest.raises(UsageError, match="serves from the model's weights"):
        make_serving_copy(torch_encoder, tmp_path)


def test_the_server_runs_a_serving_copy_without_torch(cache: Path, tmp_path: Path) -> None:
    folder = cache / "models" / "tiny"
    limit = model_token_limit(resolve_model(str(folder)), cache)  # what the server will use
    full = Encoder(str(folder), device="cpu", backend="openvino", cache_dir=cache, max_length=limit)
    expected = l2_normalize(full.encode(TEXTS, pooling="last-avg"))  # /embed normalises
    make_serving_copy(full, cache)
    if full.dtype == "bfloat16":  # only the graph with the int8 vocabulary is kept
        export = full.runner.folder  # type: ignore[attr-defined]
        assert sorted(path.name for path in export.iterdir()) == [
            "meta.json",
            "model-int8-vocabulary.bin",
            "model-int8-vocabulary.xml",
        ]
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_TORCH)
    server = ServeProcess(
        folder,
        tmp_path / "data",
        tmp_path / "serve.log",
        BAIHUA_BACKEND="auto",
        BAIHUA_CACHE_DIR=str(cache),
        PYTHONPATH=str(site),
    )
    del server.env["BAIHUA_MAX_LENGTH"]  # the token limit comes from the model's config
    server.start()
    try:
        answer = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS}, timeout=30)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json(), expected, atol=1e-6)
        assert httpx.get(f"{server.url}/info", timeout=30).json()["backend"] == "openvino"
        assert "backend chosen by backend openvino, named; recorded in a serving copy" in (
            server.output()
        )
    finally:
        assert server.stop() == 0
    assert "blocked in this test" not in server.output()
