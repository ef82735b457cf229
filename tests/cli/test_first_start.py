"""A first start builds for minutes: each step says what it does and how long it took."""

from __future__ import annotations

import re
from pathlib import Path

from tests.serve_process import run_baihua, tiny_env


def test_prepare_prints_each_step_with_its_time(tiny_bert: Path, tmp_path: Path) -> None:
    env = tiny_env(BAIHUA_CACHE_DIR=str(tmp_path / "cache"))
    done = run_baihua("models", "prepare", str(tiny_bert), "--backend", "openvino-int8", env=env)
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stderr.splitlines() if line.startswith("baihua: ")]
    for what in ("exporting to ONNX", "building openvino-int8", "checking openvino-int8"):
        started = [i for i, line in enumerate(steps) if what in line and line.endswith("…")]
        ended = [
            i for i, line in enumerate(steps) if re.search(f"{what}.*: done in [0-9.]+ s$", line)
        ]
        assert len(started) == len(ended) == 1 and started < ended, (what, steps)
    again = run_baihua("models", "prepare", str(tiny_bert), "--backend", "openvino-int8", env=env)
    assert again.returncode == 0 and "done in" not in again.stderr  # nothing left to build


def test_step_lines_are_printed_once_after_a_library_configures_logging(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """ONNX Runtime's quantiser calls logging.basicConfig() on import: baihua's lines must not
    then reach a second handler ("INFO:baihua…")."""
    env = tiny_env(BAIHUA_CACHE_DIR=str(tmp_path / "cache"))
    done = run_baihua("models", "prepare", str(tiny_bert), "--backend", "onnx-int8", env=env)
    assert done.returncode == 0, done.stderr
    assert "quantising to onnx-int8" in done.stderr
    assert ":baihua" not in done.stderr, done.stderr
    steps = [line for line in done.stderr.splitlines() if line.startswith("baihua: ")]
    assert len(steps) == len(set(steps)), steps
