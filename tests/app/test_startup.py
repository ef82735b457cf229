"""`baihua serve` checks model, artifact and index against each other before it opens its port,
and exits with one line when they do not fit (the real command, in its own process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.core.spec import EmbeddingSpec, SpecMismatchError
from baihua.encoder import Encoder, encoder_spec, resolve_model
from baihua.encoder.models import model_token_limit
from baihua.index import FaissStore
from baihua.serving.components import build_pipeline, resolve_max_length
from baihua.serving.settings import load_settings
from baihua.whitening import Whitening
from tests.app.conftest import wait_until
from tests.app.test_crash import free_port, is_ready
from tests.conftest import build_tiny_bert

BAIHUA = Path(sys.executable).with_name("baihua")
TEXTS = [f"hello {w} world {i}" for i, w in enumerate("abcdefghijklmnopqrstuvwxyz")]
ENV = {**os.environ, "BAIHUA_DEVICE": "cpu", "BAIHUA_POOLING": "last-avg", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def other_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shapes and tokenizer as `tiny_bert`, other weights: 32 dims both."""
    return build_tiny_bert(tmp_path_factory.mktemp("other-bert"), seed=1)


def build_index(model: Path, data_dir: Path, corpus: Path, *extra: str) -> None:
    corpus.write_text("".join(t + "\n" for t in TEXTS))
    args = ["index", "build", "--input", str(corpus), "--data-dir", str(data_dir)]
    result = CliRunner(env=ENV).invoke(cli, [*args, "--model", str(model), *extra])
    assert result.exit_code == 0, result.output


def whitening_artifact(model: Path, path: Path, shift: int, max_length: int | None = None) -> Path:
    """A whitening fitted at `max_length` (default: the model's own limit)."""
    limit = max_length or model_token_limit(resolve_model(str(model)))
    encoder = Encoder(str(model), pooling="last-avg", device="cpu", max_length=limit)
    Whitening(8).fit(encoder.encode(TEXTS[shift:] + TEXTS[:shift])[:20]).save_pretrained(
        path, spec=encoder_spec(encoder)
    )
    return path


def serve(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(BAIHUA), "serve", "--port", str(free_port()), *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("baihua: error: ")
    return lines[0]


def test_a_missing_artifact_exits_at_once_with_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    result = serve("--model", str(tiny_bert), "--data-dir", str(tmp_path), "--whitening", "nosuch")
    assert "nosuch does not exist" in one_error_line(result)


@pytest.mark.parametrize(
    ("factory", "params", "says"),
    [
        ("Flat", "efSearch=512", "do not fit 'Flat', which has no parameter 'efSearch'"),
        ("IVF16,Flat", "nprobe=abc", "'nprobe=abc' is not name=number"),
    ],
)
def test_unusable_index_search_params_exit_at_once_with_one_line(
    tiny_bert: Path, tmp_path: Path, factory: str, params: str, says: str
) -> None:
    env = {"BAIHUA_INDEX_FACTORY": factory, "BAIHUA_INDEX_SEARCH_PARAMS": params}
    result = serve("--model", str(tiny_bert), "--data-dir", str(tmp_path), env=env)
    line = one_error_line(result)
    assert line.startswith("baihua: error: index_search_params (BAIHUA_INDEX_SEARCH_PARAMS): ")
    assert says in line
    assert not (tmp_path / "index").exists()  # refused before the index directory was made


def test_an_index_built_with_another_model_of_the_same_dim_is_refused(
    tiny_bert: Path, other_bert: Path, tmp_path: Path
) -> None:
    build_index(tiny_bert, tmp_path / "data", tmp_path / "c.txt")
    result = serve("--model", str(other_bert), "--data-dir", str(tmp_path / "data"))
    line = one_error_line(result)
    assert "the index at" in line and "was made in another vector space (" in line
    assert "weights '" in line and "baihua index reembed" in line


def test_an_index_filled_with_another_whitening_of_the_same_k_is_refused(
    tiny_bert: Path, tmp_path: Path
) -> None:
    w1 = whitening_artifact(tiny_bert, tmp_path / "w1", 0)
    w2 = whitening_artifact(tiny_bert, tmp_path / "w2", 13)
    build_index(tiny_bert, tmp_path / "data", tmp_path / "c.txt", "--whitening", str(w1))
    result = serve(
        "--model", str(tiny_bert), "--data-dir", str(tmp_path / "data"), "--whitening", str(w2)
    )
    line = one_error_line(result)
    assert "transform '" in line and "n_components" not in line  # same k, other transform


def test_a_matching_start_says_what_it_serves_then_gets_ready(
    tiny_bert: Path, tmp_path: Path
) -> None:
    w1 = whitening_artifact(tiny_bert, tmp_path / "w1", 0)
    build_index(tiny_bert, tmp_path / "data", tmp_path / "c.txt", "--whitening", str(w1))
    port = free_port()
    command = [str(BAIHUA), "serve", "--port", str(port), "--model", str(tiny_bert)]
    command += ["--data-dir", str(tmp_path / "data"), "--whitening", str(w1)]
    process = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: is_ready(url) or process.poll() is not None, "never ready", 120)
        assert process.poll() is None
        hits = httpx.post(f"{url}/search", json={"query": TEXTS[3], "top_k": 1}).json()
        assert hits["results"][0]["text"] == TEXTS[3]
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    started = next(line for line in stderr.splitlines() if line.startswith("baihua: serving"))
    assert f"model {tiny_bert}" in started and "pooling last-avg" in started
    assert "torch/float32" in started and "k=8" in started
    assert f"8 dims; index {tmp_path / 'data' / 'index'}: {len(TEXTS)} documents" in started


def test_unset_max_length_is_the_recorded_spaces_else_the_models(
    tiny_bert: Path, tmp_path: Path
) -> None:
    limit = model_token_limit(resolve_model(str(tiny_bert)))
    w64 = whitening_artifact(tiny_bert, tmp_path / "w64", 0, max_length=64)
    data = tmp_path / "data"

    def resolved(**given: object) -> tuple[int | None, str]:
        settings, why = resolve_max_length(load_settings(model=str(tiny_bert), **given))
        return settings.max_length, why

    assert resolved(data_dir=data) == (limit, "the model's own limit; max_length is not set")
    length, why = resolved(data_dir=data, whitening=w64)
    assert length == 64 and f"whitening artifact {w64}" in why
    assert resolved(data_dir=data, whitening=w64, max_length=128) == (128, "set by max_length")
    explicit = load_settings(model=str(tiny_bert), whitening=w64, max_length=128)
    with pytest.raises(SpecMismatchError, match="max_length"):
        build_pipeline(explicit)

    spec = EmbeddingSpec(model="m", weights="a" * 64, pooling="last-avg", max_length=48)
    with FaissStore.open(data / "index", 4, spec=spec) as store:
        store.add([0], np.eye(1, 4, dtype=np.float32), ["t"])
    length, why = resolved(data_dir=data)
    assert length == 48 and f"the index in {data / 'index'}" in why
    # the artifact defines the space before the index (a mismatch is refused when they meet)
    assert resolved(data_dir=data, whitening=w64)[0] == 64


def test_serve_adopts_the_artifacts_max_length_and_refuses_another_given_one(
    tiny_bert: Path, tmp_path: Path
) -> None:
    w64 = whitening_artifact(tiny_bert, tmp_path / "w64", 0, max_length=64)
    build_index(tiny_bert, tmp_path / "data", tmp_path / "c.txt", "--whitening", str(w64))
    args = ["--model", str(tiny_bert), "--data-dir", str(tmp_path / "data")]
    port = free_port()
    command = [str(BAIHUA), "serve", "--port", str(port), *args, "--whitening", str(w64)]
    process = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: is_ready(url) or process.poll() is not None, "never ready", 120)
        assert process.poll() is None
        assert httpx.get(f"{url}/info").json()["max_length"] == 64
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    line = next(line for line in stderr.splitlines() if "max length" in line)
    assert line == f"baihua: max length 64 tokens: the whitening artifact {w64} was fitted at it"

    env = {**ENV, "BAIHUA_MAX_LENGTH": "128"}
    command = [str(BAIHUA), "serve", "--port", str(free_port()), *args, "--whitening", str(w64)]
    given = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL
    )
    assert "max_length" in one_error_line(given)
