"""`baihua index build --engine ray` with the Ray workers writing to a Milvus server process
stores what `--engine local` stores: the same ids, texts, payloads, and vectors."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.serving.components import build_pipeline, open_store
from baihua.serving.settings import Settings
from tests.cli.test_index_build import write_jsonl

runner = CliRunner()


def build(corpus: Path, data: Path, tiny_bert: Path, env: dict[str, str], *extra: str) -> None:
    args = ["index", "build", "--input", str(corpus), "--data-dir", str(data)]
    result = runner.invoke(cli, [*args, "--model", str(tiny_bert), *extra], env=env)
    assert result.exit_code == 0, result.output


def test_ray_workers_writing_to_a_milvus_server_store_the_local_build(
    tiny_bert: Path, tmp_path: Path, milvus_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("BAIHUA_NUM_THREADS", "1")  # the same kernels in the driver and actors
    monkeypatch.setenv("BAIHUA_POOLING", "last-avg")
    corpus = write_jsonl(tmp_path / "docs.jsonl", 600)
    build(corpus, tmp_path / "local", tiny_bert, {})
    collection = f"ray_{uuid.uuid4().hex}"
    milvus = {
        "BAIHUA_INDEX_BACKEND": "milvus",
        "BAIHUA_MILVUS_URI": milvus_server,
        "BAIHUA_MILVUS_COLLECTION": collection,
    }
    started = time.monotonic()
    build(corpus, tmp_path / "ray", tiny_bert, milvus, "--engine", "ray", "--ray-block-size", "100")
    print(f"ray index build into the Milvus server: {time.monotonic() - started:.1f} s")

    local_settings = Settings(model=str(tiny_bert), data_dir=tmp_path / "local")
    ray_settings = Settings(
        model=str(tiny_bert),
        data_dir=tmp_path / "ray",
        index_backend="milvus",
        milvus_uri=milvus_server,
        milvus_collection=collection,
    )
    pipeline = build_pipeline(local_settings)
    with open_store(local_settings, pipeline) as local, open_store(ray_settings, pipeline) as ray:
        ids = local.ids()
        assert ids.tolist() == list(range(100, 700))
        assert ray.ids().tolist() == ids.tolist()
        assert ray.count() == 600
        assert ray.get_many(ids) == local.get_many(ids)  # texts and payloads
        cosines = np.sum(ray.vectors(ids) * local.vectors(ids), axis=1)
        assert cosines.min() >= 0.9999
