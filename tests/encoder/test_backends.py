"""Every backend against torch fp32 on the tiny random BERT; exports cached, atomic, rebuilt when
stale; `auto` resolved, stored and obeyed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from baihua.encoder import POOLINGS, Encoder
from baihua.encoder.backends import BACKENDS
from baihua.encoder.backends.calibration import MIN_COSINE, throughputs
from baihua.encoder.backends.export import MODEL_FILE, PARTIAL_SUFFIX
from baihua.encoder.backends.openvino_backend import cpu_has_bf16
from baihua.encoder.backends.prepare import auto_pick
from tests.conftest import build_tiny_bert

TEXTS = ["hello world", "我在中国", "bert 的一是不了人 " * 6, "a b c", "hello", "world bert"] * 3


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def exports(cache: Path) -> list[Path]:
    return sorted(cache.glob("models/*.onnx/*/onnx*"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backend-cache")


@pytest.fixture(scope="module")
def reference(tiny_bert: Path) -> Encoder:
    return Encoder(str(tiny_bert), device="cpu", backend="torch", dtype="float32")


@pytest.mark.parametrize("pooling", POOLINGS)
def test_onnx_fp32_matches_torch_fp32_on_every_pooling(
    tiny_bert: Path, cache: Path, reference: Encoder, pooling: str
) -> None:
    onnx = Encoder(str(tiny_bert), device="cpu", backend="onnx", cache_dir=cache)
    assert (onnx.backend, onnx.dtype) == ("onnx", "float32")
    np.testing.assert_allclose(
        onnx.encode(TEXTS, pooling=pooling), reference.encode(TEXTS, pooling=pooling), atol=1e-5
    )


@pytest.mark.parametrize("pooling", POOLINGS)
def test_onnx_int8_stays_within_the_cosine_bound_on_every_pooling(
    tiny_bert: Path, cache: Path, reference: Encoder, pooling: str
) -> None:
    int8 = Encoder(str(tiny_bert), device="cpu", backend="onnx-int8", cache_dir=cache)
    assert (int8.backend, int8.dtype) == ("onnx-int8", "int8")
    ours, theirs = int8.encode(TEXTS, pooling=pooling), reference.encode(TEXTS, pooling=pooling)
    assert cosines(ours, theirs).min() >= MIN_COSINE
    assert not np.array_equal(ours, theirs)  # it really ran quantised


def test_int8_graph_is_quantised_and_checked_against_fp32(tiny_bert: Path, cache: Path) -> None:
    import onnx

    encoder = Encoder(str(tiny_bert), device="cpu", backend="onnx-int8", cache_dir=cache)
    folder = encoder.runner.folder  # type: ignore[attr-defined]
    ops = {node.op_type for node in onnx.load(str(folder / MODEL_FILE)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["dtype"] == "int8"
    assert MIN_COSINE <= meta["calibration"]["min_cosine"] <= meta["calibration"]["mean_cosine"]


def test_three_poolings_from_one_pass_equal_one_at_a_time(tiny_bert: Path, cache: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu", backend="onnx", cache_dir=cache)
    together = encoder.encode_poolings(TEXTS, ["cls", "first-last-avg", "pooler"]).vectors
    for pooling, vectors in together.items():
        np.testing.assert_array_equal(vectors, encoder.encode(TEXTS, pooling=pooling))


def test_auto_resolves_to_a_real_backend_and_stores_its_measurement(
    tiny_bert: Path, cache: Path
) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu", backend="auto", cache_dir=cache)
    assert encoder.backend in BACKENDS
    (choice_file,) = cache.glob("models/*.onnx/*/auto-*.json")
    record = json.loads(choice_file.read_text())
    assert (record["backend"], record["dtype"]) == (encoder.backend, encoder.dtype)
    rows = record["candidates"]
    assert {(r["backend"], r["dtype"]) for r in rows} == {
        ("torch", "float32"), ("torch", "bfloat16"), ("onnx", "float32"), ("onnx-int8", "int8"),
        ("openvino", "bfloat16" if cpu_has_bf16() else "float32"), ("openvino-int8", "int8"),
    }  # fmt: skip
    allowed = [r for r in rows if r["min_cosine"] >= MIN_COSINE]
    top = max(r["sentences_per_s"] for r in allowed)
    tied = [r for r in allowed if r["sentences_per_s"] >= 0.95 * top]
    size = {"int8": 1, "bfloat16": 2, "float32": 4}
    smallest = min(tied, key=lambda r: (size[r["dtype"]], -r["sentences_per_s"]))
    assert (smallest["backend"], smallest["dtype"]) == (encoder.backend, encoder.dtype)
    assert smallest["timed_passes"] == 5  # the chosen one ran the whole race
    assert {r["timed_passes"] for r in rows} <= {1, 5}


class Sleeper:
    """Stands in for a backend whose every batch takes `seconds`: the race's rules, not a
    model's speed, are under test."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, need_first: bool) -> None:
        time.sleep(self.seconds)


def test_the_race_times_in_full_only_contenders_within_half_the_fastest() -> None:
    batch = (np.ones((4, 8), dtype=np.int64), np.ones((4, 8), dtype=np.int64))
    runners = [Sleeper(0.004), Sleeper(0.006), Sleeper(0.002), Sleeper(0.04)]
    contenders = [True, True, False, True]  # the fastest cannot be chosen (its cosine)
    result = throughputs(runners, [batch, batch], contenders)  # type: ignore[arg-type]
    assert [passes for _, passes in result] == [5, 5, 1, 1]
    speeds = [speed for speed, _ in result]
    assert 0 < 5 * speeds[3] < speeds[0]  # out of the race, still measured once


def _row(backend: str, dtype: str, speed: float, min_cosine: float = 0.999) -> dict[str, Any]:
    return {"backend": backend, "dtype": dtype, "sentences_per_s": speed, "min_cosine": min_cosine}


@pytest.mark.parametrize(
    ("rows", "picked"),
    [
        # a tie on speed (within 5 %) goes to the smaller weights
        ([_row("torch", "float32", 100), _row("openvino", "bfloat16", 515),
          _row("openvino-int8", "int8", 500)], 2),
        # int8 more than 5 % slower: the fastest wins
        ([_row("torch", "float32", 100), _row("openvino", "bfloat16", 515),
          _row("openvino-int8", "int8", 480)], 1),
        # the fastest is out of MIN_COSINE: never picked, even with the smallest weights
        ([_row("torch", "float32", 100), _row("openvino", "bfloat16", 300),
          _row("onnx-int8", "int8", 900, min_cosine=0.98)], 1),
        # of two tied int8 backends, the faster
        ([_row("torch", "float32", 100), _row("onnx-int8", "int8", 490),
          _row("openvino-int8", "int8", 500)], 2),
    ],
)  # fmt: skip
def test_auto_pick_ties_go_to_the_smaller_model(rows: list[dict[str, Any]], picked: int) -> None:
    assert auto_pick(rows) == picked


def test_auto_follows_the_stored_choice_without_measuring_again(
    tiny_bert: Path, cache: Path
) -> None:
    Encoder(str(tiny_bert), device="cpu", backend="auto", cache_dir=cache)
    (choice_file,) = cache.glob("models/*.onnx/*/auto-*.json")
    record = json.loads(choice_file.read_text())
    for backend, dtype in (("torch", "bfloat16"), ("onnx", "float32")):
        choice_file.write_text(json.dumps({**record, "backend": backend, "dtype": dtype}))
        encoder = Encoder(str(tiny_bert), device="cpu", backend="auto", cache_dir=cache)
        assert (encoder.backend, encoder.dtype) == (backend, dtype)
    choice_file.unlink()  # the next auto measures again


def test_export_is_built_once_and_reused(tiny_bert: Path, tmp_path: Path) -> None:
    Encoder(str(tiny_bert), device="cpu", backend="onnx-int8", cache_dir=tmp_path)
    built = {path: (path / MODEL_FILE).stat().st_mtime_ns for path in exports(tmp_path)}
    assert [p.name for p in built] == ["onnx", "onnx-int8"]
    Encoder(str(tiny_bert), device="cpu", backend="onnx-int8", cache_dir=tmp_path)
    Encoder(str(tiny_bert), device="cpu", backend="onnx", cache_dir=tmp_path)
    assert {path: (path / MODEL_FILE).stat().st_mtime_ns for path in exports(tmp_path)} == built


def test_changed_weights_rebuild_the_export_and_drop_the_stale_one(tmp_path: Path) -> None:
    folder = build_tiny_bert(tmp_path / "model")
    before = Encoder(str(folder), device="cpu", backend="onnx", cache_dir=tmp_path / "c")
    old = exports(tmp_path / "c")
    weights = load_file(folder / "model.safetensors")
    weights = {k: v * 1.5 if "dense.weight" in k else v for k, v in weights.items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    after = Encoder(str(folder), device="cpu", backend="onnx", cache_dir=tmp_path / "c")
    torch_after = Encoder(str(folder), device="cpu", backend="torch")
    new = exports(tmp_path / "c")
    assert len(new) == 1 and new != old and not any(p.exists() for p in old)
    np.testing.assert_allclose(after.encode(TEXTS), torch_after.encode(TEXTS), atol=1e-5)
    assert not np.allclose(before.encode(TEXTS), after.encode(TEXTS), atol=1e-3)


def test_a_new_onnxruntime_version_rebuilds_the_export(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from baihua.encoder.backends import export

    Encoder(str(tiny_bert), device="cpu", backend="onnx", cache_dir=tmp_path)
    old = exports(tmp_path)
    real_version = export.version
    monkeypatch.setattr(
        export, "version", lambda name: "99.0" if name == "onnxruntime" else real_version(name)
    )
    Encoder(str(tiny_bert), device="cpu", backend="onnx", cache_dir=tmp_path)
    new = exports(tmp_path)
    assert len(new) == 1 and new != old
    assert json.loads((new[0] / "meta.json").read_text())["key"]["onnxruntime"] == "99.0"


KILLED_EXPORT = """
import os, signal, sys
from baihua.encoder import Encoder
from baihua.encoder.backends import export, onnx_export

def killed_while_writing(fp32, out):
    (out / export.MODEL_FILE).write_bytes(b"half an onnx file")
    os.kill(os.getpid(), signal.SIGKILL)

onnx_export.quantize_int8 = killed_while_writing
import baihua.encoder.backends.prepare as prepare
prepare.quantize_int8 = killed_while_writing
Encoder(sys.argv[1], device="cpu", backend="onnx-int8", cache_dir=sys.argv[2])
"""


def test_a_killed_export_leaves_nothing_that_is_used_later(
    tiny_bert: Path, tmp_path: Path, reference: Encoder
) -> None:
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILLED_EXPORT))
    env = {**os.environ, "BAIHUA_BACKEND": "onnx-int8"}
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_bert), str(tmp_path / "c")], env=env, timeout=300
    )
    assert done.returncode == -9
    assert [p.name for p in exports(tmp_path / "c")] == ["onnx"]  # fp32 finished, int8 did not
    (partial,) = (tmp_path / "c").glob(f"models/*.onnx/*/.onnx-int8.*{PARTIAL_SUFFIX}")
    assert (partial / MODEL_FILE).read_bytes() == b"half an onnx file"
    int8 = Encoder(str(tiny_bert), device="cpu", backend="onnx-int8", cache_dir=tmp_path / "c")
    assert cosines(int8.encode(TEXTS), reference.encode(TEXTS)).min() >= MIN_COSINE


@pytest.mark.parametrize(
    ("backend", "dtype", "message"),
    [
        ("onnx-int8", "bfloat16", "backend onnx-int8 runs dtype int8"),
        ("onnx", "bfloat16", "backend onnx runs dtype float32"),
        ("torch", "int8", "backend torch runs dtype float32 or bfloat16"),
        ("auto", "float32", "needs an explicit backend"),
        ("tensorrt", None, "unknown backend 'tensorrt'"),
    ],
)
def test_impossible_backend_and_dtype_combinations_are_refused(
    tiny_bert: Path, backend: str, dtype: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Encoder(str(tiny_bert), device="cpu", backend=backend, dtype=dtype)  # type: ignore[arg-type]


ME5_TEXTS = [
    "今天天气很好",
    "我想提前还款",
    "这家银行的信用卡怎么办理？",
    "A man is playing a guitar.",
    "花呗分期后可以提前还清吗，会不会收手续费",
    "他们打算明年去北京工作",
]


@pytest.mark.slow
def test_every_backend_on_the_real_default_model() -> None:
    """me5-small (cache under BAIHUA_CACHE_DIR when set): fp32 ONNX equals torch, int8 and bf16
    keep the cosine bound on Chinese and English sentences."""
    reference = Encoder("me5-small", device="cpu", backend="torch").encode(ME5_TEXTS)
    onnx = Encoder("me5-small", device="cpu", backend="onnx").encode(ME5_TEXTS)
    assert cosines(onnx, reference).min() >= 0.99999
    for backend, dtype in (("onnx-int8", None), ("torch", "bfloat16")):
        encoder = Encoder("me5-small", device="cpu", backend=backend, dtype=dtype)  # type: ignore[arg-type]
        assert cosines(encoder.encode(ME5_TEXTS), reference).min() >= MIN_COSINE


def test_onnx_int8_vectors_do_not_depend_on_the_batch(tiny_bert: Path, cache: Path) -> None:
    """Dynamic int8 takes its activation scale per tensor: each text runs alone."""
    texts = ["hello world", "bert", "a b c d e f g h i j k l m n o p", "我在中国 hello"]
    encoder = Encoder(str(tiny_bert), backend="onnx-int8", device="cpu", cache_dir=cache)
    batched = encoder.encode(texts)
    encoder.batch_size = 1
    np.testing.assert_array_equal(encoder.encode(texts), batched)
