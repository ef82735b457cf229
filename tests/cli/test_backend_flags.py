"""`--backend` on every command that encodes: the same vectors as torch fp32 (within each
backend's bound), recorded in eval rows, refused when impossible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.encoder import Encoder, l2_normalize
from baihua.encoder.backends.calibration import MIN_COSINE
from baihua.whitening import load_transform

runner = CliRunner()
TEXTS = ["hello world", "我在中国", "bert bert hello"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BAIHUA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def embed(tiny_bert: Path, *flags: str) -> np.ndarray:
    result = runner.invoke(cli, ["embed", *TEXTS, "--model", str(tiny_bert), *flags])
    assert result.exit_code == 0, result.output
    return np.array([json.loads(line)["embedding"] for line in result.stdout.splitlines()])


def test_embed_on_onnx_equals_torch_fp32(tiny_bert: Path) -> None:
    expected = l2_normalize(Encoder(str(tiny_bert), backend="torch").encode(TEXTS))
    np.testing.assert_allclose(embed(tiny_bert, "--backend", "onnx"), expected, atol=1e-5)


def test_embed_on_auto_and_on_int8_stay_within_the_cosine_bound(tiny_bert: Path) -> None:
    expected = l2_normalize(Encoder(str(tiny_bert), backend="torch").encode(TEXTS))
    for backend in ("auto", "onnx-int8"):
        got = embed(tiny_bert, "--backend", backend)
        assert (got * expected).sum(1).min() >= MIN_COSINE


def test_environment_chooses_the_backend_and_fp32_can_be_forced(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAIHUA_BACKEND", "onnx-int8")
    int8 = embed(tiny_bert)
    forced = embed(tiny_bert, "--backend", "torch", "--dtype", "float32")
    expected = l2_normalize(Encoder(str(tiny_bert), backend="torch").encode(TEXTS))
    np.testing.assert_allclose(forced, expected, atol=1e-6)
    assert not np.allclose(int8, expected, atol=1e-6)


def test_models_prepare_builds_and_checks_a_backend(tiny_bert: Path, own_cache: Path) -> None:
    result = runner.invoke(cli, ["models", "prepare", str(tiny_bert), "--backend", "onnx-int8"])
    assert result.exit_code == 0, result.output
    assert "backend onnx-int8 (int8)" in result.stdout
    assert "calibration min/mean cosine to fp32" in result.stdout
    assert len(list(own_cache.glob("models/*.onnx/*/onnx-int8/model.onnx"))) == 1


def test_models_prepare_and_the_environment_take_openvino_int8(
    tiny_bert: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(cli, ["models", "prepare", str(tiny_bert), "--backend", "openvino-int8"])
    assert result.exit_code == 0, result.output
    assert "backend openvino-int8 (int8)" in result.stdout
    assert "calibration min/mean cosine to fp32" in result.stdout
    assert len(list(own_cache.glob("models/*.onnx/*/openvino-int8/model.xml"))) == 1
    monkeypatch.setenv("BAIHUA_BACKEND", "openvino-int8")
    expected = l2_normalize(Encoder(str(tiny_bert), backend="torch").encode(TEXTS))
    assert (embed(tiny_bert) * expected).sum(1).min() >= MIN_COSINE
    monkeypatch.setenv("BAIHUA_BACKEND", "openvino")
    forced = embed(tiny_bert, "--dtype", "float32")
    np.testing.assert_allclose(forced, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backend", "tensorrt"], "invalid settings: backend"),
        (["--backend", "onnx-int8", "--dtype", "bfloat16"], "backend onnx-int8 runs dtype int8"),
        (["--dtype", "bfloat16", "--backend", "auto"], "needs an explicit backend"),
    ],
)
def test_impossible_backends_are_one_line_errors(
    tiny_bert: Path, flags: list[str], message: str
) -> None:
    result = runner.invoke(cli, ["embed", "x", "--model", str(tiny_bert), *flags])
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_fit_on_onnx_gives_the_torch_fit(tiny_bert: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"hello {a} world {b}\n" for a in "abcdef" for b in "ghijkl"))
    for backend in ("torch", "onnx"):
        result = runner.invoke(cli, [
            "fit", "--input", str(corpus), "--out", str(tmp_path / backend), "--model",
            str(tiny_bert), "--n-components", "8", "--backend", backend,
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
    onnx, torch = load_transform(tmp_path / "onnx"), load_transform(tmp_path / "torch")
    np.testing.assert_allclose(onnx.mean_, torch.mean_, atol=1e-5)


def test_index_build_on_int8_indexes_every_document(tiny_bert: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "docs.txt"
    corpus.write_text("".join(f"hello {c} world\n" for c in "abcdefghij"))
    result = runner.invoke(cli, [
        "index", "build", "--input", str(corpus), "--data-dir", str(tmp_path / "data"),
        "--model", str(tiny_bert), "--backend", "onnx-int8",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "10 documents" in result.stderr


def test_eval_rows_name_backend_and_dtype(tiny_bert: Path, tmp_path: Path) -> None:
    task = tmp_path / "data" / "TINY"
    task.mkdir(parents=True)
    pairs = [(f"hello {a}", f"world {a}{b}", str((i * 7) % 5)) for i, (a, b) in
             enumerate(zip("abcdefghijklmnop", "qrstuvwxyzabcdef", strict=True))]  # fmt: skip
    (task / "TINY.test.data").write_text("".join("\t".join(p) + "\n" for p in pairs))
    for backend in ("onnx-int8", "onnx"):
        result = runner.invoke(cli, [
            "eval", "--data-dir", str(tmp_path / "data"), "--model", str(tiny_bert),
            "--whitening", "none", "--fit-on", "test", "--backend", backend,
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
        header, _, row = result.stdout.strip().splitlines()[:3]
        assert header.startswith("| model | backend | dtype |")
        dtype = "int8" if backend == "onnx-int8" else "float32"
        assert row.split(" | ")[1:3] == [backend, dtype]
