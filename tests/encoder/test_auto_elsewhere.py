"""An image built on one machine and run on another: `auto` follows the choice stored there
instead of measuring at start, and a complete export runs without the fp32 graph it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baihua.encoder import Encoder
from baihua.encoder.backends.calibration import CALIBRATION_SET
from baihua.encoder.backends.prepare import Backends, auto_recipes


def never_measure(self: Backends) -> None:
    raise AssertionError("auto measured instead of following the stored choice")


def test_auto_follows_a_choice_stored_on_another_machine_and_says_so(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = Encoder(str(tiny_bert), device="cpu", backend="onnx", cache_dir=tmp_path)
    record = {
        "backend": "onnx",
        "dtype": "float32",
        "calibration": f"set {CALIBRATION_SET}, prefix ''",
        "recipes": auto_recipes(),
        "machine": "Some Other CPU 9000; flags sse2; threads 64",
    }
    key_dir = built.runner.folder.parent  # type: ignore[attr-defined]
    (key_dir / "auto-0123456789ab.json").write_text(json.dumps(record))
    monkeypatch.setattr(Backends, "measure", never_measure)
    encoder = Encoder(str(tiny_bert), device="cpu", backend="auto", cache_dir=tmp_path)
    assert (encoder.backend, encoder.dtype) == ("onnx", "float32")
    assert encoder.runner.chosen_by == (  # type: ignore[attr-defined]
        "auto, measured on Some Other CPU 9000, not here (`baihua models prepare --backend auto`)"
    )


def test_a_choice_from_other_recipes_is_not_followed(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = Encoder(str(tiny_bert), device="cpu", backend="onnx", cache_dir=tmp_path)
    record = {"backend": "onnx", "dtype": "float32", "recipes": "an older recipe"}
    record["calibration"] = f"set {CALIBRATION_SET}, prefix ''"
    key_dir = built.runner.folder.parent  # type: ignore[attr-defined]
    (key_dir / "auto-0123456789ab.json").write_text(json.dumps(record))
    monkeypatch.setattr(Backends, "measure", never_measure)
    with pytest.raises(AssertionError, match="auto measured"):
        Encoder(str(tiny_bert), device="cpu", backend="auto", cache_dir=tmp_path)


def test_a_complete_export_runs_without_the_fp32_graph(tiny_bert: Path, tmp_path: Path) -> None:
    first = Encoder(str(tiny_bert), device="cpu", backend="onnx-int8", cache_dir=tmp_path)
    fp32 = first.runner.folder.parent / "onnx"  # type: ignore[attr-defined]
    vectors = first.encode(["hello world", "我在中国"])
    for path in fp32.iterdir():
        path.unlink()
    fp32.rmdir()
    again = Encoder(str(tiny_bert), device="cpu", backend="onnx-int8", cache_dir=tmp_path)
    assert (again.encode(["hello world", "我在中国"]) == vectors).all()
    assert not fp32.exists()
