"""`baihua fit` refuses what cannot give an honest transform, and says so before a model loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.whitening import Whitening, load_transform

runner = CliRunner()
NO_MODEL = "/nonexistent/model"  # loading it would fail: an error about anything else came first


def fit(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli, ["fit", *args])
    return result.exit_code, result.stderr


@pytest.fixture
def lines(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"sentence number {i}\n" for i in range(300)), encoding="utf-8")
    return path


def test_n_components_above_the_sentences_rank_is_refused_before_the_model_loads(
    lines: Path, tmp_path: Path
) -> None:
    code, err = fit(
        "--input", str(lines), "--out", str(tmp_path / "w"), "--model", NO_MODEL,
        "--n-components", "300",
    )  # fmt: skip
    assert code == 1
    assert "300 sentences give a covariance of rank at most 299, below --n-components 300" in err
    assert "--cap-n-components" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-components", "0"], "n_components must be an integer >= 1"),
        (["--n-components", "-3"], "n_components must be an integer >= 1"),
        (["--method", "pca"], "--method must be whitening, flow or jl"),
        (["--method", "flow", "--n-components", "8"], "drop --n-components"),
        (["--gamma", "nan"], "gamma must be a finite number"),
        (["--text-type", "doc"], "--text-type must be query or passage"),
    ],
)
def test_bad_options_are_refused_before_the_model_loads(
    lines: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    code, err = fit(
        "--input", str(lines), "--out", str(tmp_path / "w"), "--model", NO_MODEL, *flags
    )
    assert code == 1 and message in err and "nonexistent" not in err


def test_out_pointing_at_a_file_is_refused_before_the_model_loads(
    lines: Path, tmp_path: Path
) -> None:
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    code, err = fit("--input", str(lines), "--out", str(target), "--model", NO_MODEL)
    assert code == 1 and f"cannot save an artifact to {target}: it is a file" in err
    assert target.read_text() == "keep me"


def test_out_inside_a_file_is_refused_before_the_model_loads(lines: Path, tmp_path: Path) -> None:
    code, err = fit("--input", str(lines), "--out", str(lines / "w"), "--model", NO_MODEL)
    assert code == 1 and "is a file, not a folder" in err


def test_n_components_above_the_models_dimension_is_refused(
    tiny_bert: Path, lines: Path, tmp_path: Path
) -> None:
    code, err = fit(
        "--input", str(lines), "--out", str(tmp_path / "w"), "--model", str(tiny_bert),
        "--n-components", "40",
    )  # fmt: skip
    assert code == 1 and "--n-components 40 is above the model's dimension 32" in err


@pytest.mark.slow
def test_the_issues_fit_is_capped_to_the_rank_on_me5_small(lines: Path, tmp_path: Path) -> None:
    """300 sentences, --n-components 300 on me5-small (384 dims) with --cap-n-components: the
    artifact keeps the rank, and no component is scaled up by more than 1e4 × the first."""
    code, err = fit(
        "--input", str(lines), "--out", str(tmp_path / "w"), "--model", "me5-small",
        "--n-components", "300", "--cap-n-components",
    )  # fmt: skip
    assert code == 0, err
    transform = load_transform(tmp_path / "w")
    assert isinstance(transform, Whitening)
    assert transform.n_components_ == transform.rank_ <= 299
    norms = np.linalg.norm(transform.components_, axis=0)
    assert norms.max() < 1e4 * norms[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-components", "0"], "n_components must be an integer >= 1"),
        (["--n-components", "8", "--seed", "-1"], "seed must be an integer >= 0"),
        (["--n-components", "8", "--out", "FILE"], "it is a file"),
    ],
)
def test_jl_options_are_refused_before_the_model_loads(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    out = ["--out", str(tmp_path / "w")] if "--out" not in flags else []
    flags = [str(file) if flag == "FILE" else flag for flag in flags]
    code, err = fit("--method", "jl", "--model", NO_MODEL, *out, *flags)
    assert code == 1 and message in err and "nonexistent" not in err
