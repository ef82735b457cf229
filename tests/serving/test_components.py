"""What the settings build: the encoder's OpenVINO streams for serving and for bulk commands."""

from __future__ import annotations

from pathlib import Path

from baihua.serving.components import build_encoder
from baihua.serving.settings import load_settings


def test_streams_default_to_latency_for_serving_and_to_throughput_for_bulk_work(
    tiny_bert: Path, tmp_path: Path
) -> None:
    settings = load_settings(
        model=str(tiny_bert), backend="openvino", device="cpu", cache_dir=tmp_path
    )
    serving, bulk = build_encoder(settings), build_encoder(settings, bulk=True)
    hint = "PERFORMANCE_HINT"
    assert str(serving.runner.compiled.get_property(hint)) == "LATENCY"  # type: ignore[attr-defined]
    assert serving.runner.parallel_requests == 1
    assert str(bulk.runner.compiled.get_property(hint)) == "THROUGHPUT"  # type: ignore[attr-defined]
    chosen = build_encoder(settings.model_copy(update={"streams": 2}), bulk=True)
    assert chosen.runner.parallel_requests == 2
