"""`baihua fit --engine ray` on a local Ray writes the whitening `--engine local` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.whitening import load_transform

runner = CliRunner()


def fit(tiny_bert: Path, corpus: Path, out: Path, *extra: str) -> None:
    args = ["fit", "--input", str(corpus), "--out", str(out), "--model", str(tiny_bert)]
    result = runner.invoke(cli, [*args, "--pooling", "last-avg", "--n-components", "16", *extra])
    assert result.exit_code == 0, result.output


def test_ray_fit_equals_the_local_fit(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("BAIHUA_NUM_THREADS", "1")  # the same kernels in the driver and actors
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"第{i}句 hello {'world ' * (i % 9)}{i}\n" for i in range(4500)))

    fit(tiny_bert, corpus, tmp_path / "local")
    # Ray blocks of the local job's chunk size (2048, the default): each sentence is encoded in
    # the same batch on both engines, so only the order of the float64 sums can differ.
    fit(tiny_bert, corpus, tmp_path / "ray", "--engine", "ray")

    local, ray = load_transform(tmp_path / "local"), load_transform(tmp_path / "ray")
    assert ray.n_samples_seen_ == local.n_samples_seen_ == 4500
    # The eigenvectors of close eigenvalues may turn within their subspace at 1e-9 when the
    # moments differ at 1e-16 (summation order); K Kᵀ, the whitening metric, does not.
    pairs = {
        "mean": (ray.mean_, local.mean_),
        "variances": (ray.explained_variance_, local.explained_variance_),
        "K Kᵀ": (ray.components_ @ ray.components_.T, local.components_ @ local.components_.T),
    }
    for name, (ours, theirs) in pairs.items():
        assert np.abs(ours - theirs).max() <= 1e-9 * np.abs(theirs).max(), name


def test_ray_flags_without_the_ray_engine_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a\nb\n")
    result = runner.invoke(
        cli, ["fit", "--input", str(corpus), "--out", str(tmp_path / "o"), "--ray-actors", "4"]
    )
    assert result.exit_code == 1
    assert "--ray-actors need --engine ray" in result.output
