"""What the settings build: the encoder's OpenVINO streams."""

from __future__ import annotations

from pathlib import Path

from baihua.serving.components import build_encoder
from baihua.serving.settings import load_settings


def test_streams_default_to_openvinos_throughput_choice_and_1_asks_for_latency(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """`serve` and the bulk commands build the same encoder: unset streams is OpenVINO's
    throughput choice (a server under concurrent requests gains as bulk work does)."""
    settings = load_settings(
        model=str(tiny_bert), backend="openvino", device="cpu", cache_dir=tmp_path
    )
    hint = "PERFORMANCE_HINT"
    default = build_encoder(settings)
    assert str(default.runner.compiled.get_property(hint)) == "THROUGHPUT"  # type: ignore[attr-defined]
    latency = build_encoder(settings.model_copy(update={"streams": 1}))
    assert str(latency.runner.compiled.get_property(hint)) == "LATENCY"  # type: ignore[attr-defined]
    assert latency.runner.parallel_requests == 1
    chosen = build_encoder(settings.model_copy(update={"streams": 2}))
    assert chosen.runner.parallel_requests == 2
