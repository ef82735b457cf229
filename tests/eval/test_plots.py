"""`baihua plot`: the anisotropy data, and each figure drawn from real results, checked by what
it plots, not only that a file appeared."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.core.spec import EmbeddingSpec
from baihua.encoder import Encoder
from baihua.eval.anisotropy import anisotropy, label_bands, roc_auc, split_cosines
from baihua.eval.plots import anisotropy_figure, k_sweep_figure, retrieval_figure, save
from baihua.eval.report import write_report
from baihua.eval.retrieval import RetrievalResult
from baihua.eval.retrieval import write_report as write_retrieval_report
from baihua.eval.sts import StsEval
from baihua.eval.transforms import parse_transform
from baihua.whitening import Whitening
from tests.eval.conftest import pairs, write_task

runner = CliRunner()
SPEC = EmbeddingSpec(model="m", weights="a" * 64, pooling="cls", max_length=64)


def cone(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Anisotropic vectors: a large shared offset plus small noise, as raw BERT vectors."""
    rng = np.random.default_rng(seed)
    return 5.0 + rng.standard_normal((n, dim)) * np.linspace(2, 0.1, dim)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_task(tmp_path / "data", "TOY", {"train": pairs(40, 0), "test": pairs(30, 2)})
    return tmp_path / "data"


def test_whitening_spreads_random_pairs_that_raw_vectors_crowd_together() -> None:
    a, b = cone(400, seed=1), cone(400, seed=2)
    labels = np.arange(400) % 2
    raw = split_cosines(a, b, labels, n_random=2000)
    whitening = Whitening().fit(np.concatenate([a, b]))
    white = split_cosines(whitening.transform(a), whitening.transform(b), labels, n_random=2000)
    assert raw["random"].mean() > 0.9
    assert abs(white["random"].mean()) < 0.05
    assert len(raw["paraphrase"]) == len(raw["non-paraphrase"]) == 200


@pytest.mark.parametrize(
    "labels,paraphrase,other",
    [([0, 1, 1, 0], [False, True, True, False], [True, False, False, True]),
     ([0, 1, 4, 5, 2.5], [False, False, True, True, False], [True, True, False, False, False])],
)  # fmt: skip
def test_label_bands_take_the_top_and_bottom_fifth(
    labels: list[float], paraphrase: list[bool], other: list[bool]
) -> None:
    got = label_bands(np.array(labels, dtype=float))
    assert got[0].tolist() == paraphrase
    assert got[1].tolist() == other


def test_label_bands_refuse_a_single_label() -> None:
    with pytest.raises(ValueError, match="every pair has label 1.0"):
        label_bands(np.ones(5))


def test_roc_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 50).astype(float), rng.integers(0, 4, 70).astype(float)
    expected = roc_auc_score([1] * 50 + [0] * 70, np.concatenate([pos, neg]))
    assert roc_auc(pos, neg) == pytest.approx(expected, abs=1e-12)


def test_anisotropy_uses_the_eval_grid_and_its_cache(
    tiny_bert: Path, data_dir: Path, tmp_path: Path
) -> None:
    encoder = Encoder(str(tiny_bert), pooling="last-avg", device="cpu")
    specs = [parse_transform("full"), parse_transform("rot-8")]
    results = anisotropy(
        encoder, data_dir=data_dir, task="TOY", transforms=specs, cache_dir=tmp_path / "cache"
    )
    assert [r.transform for r in results] == ["none", "full", "rot-8"]
    labels = np.array([float(line.split("\t")[2]) for line in pairs(30, 2)])
    paraphrase, other = label_bands(labels)
    for result in results:
        assert len(result.cosines["paraphrase"]) == paraphrase.sum()
        assert len(result.cosines["non-paraphrase"]) == other.sum()
    # raw paraphrase cosines are those `baihua eval` scores: same vectors, same pairs
    grid = StsEval(data_dir, ["TOY"], ["last-avg"], [], tmp_path / "cache")
    vectors = grid.vectors(encoder, grid_task(data_dir))["last-avg"]
    a, b = vectors["test.1"], vectors["test.2"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(results[0].cosines["paraphrase"], cos[paraphrase], atol=1e-6)
    figure = anisotropy_figure(results, "toy")
    assert [ax.get_title().split(":")[0] for ax in figure.axes] == ["none", "full", "rot-8"]


def grid_task(data_dir: Path):  # type: ignore[no-untyped-def]
    from baihua.eval.datasets import load_task

    return load_task(data_dir, "TOY")


def test_save_writes_png_and_a_reproducible_svg(tmp_path: Path) -> None:
    results = [
        _pair_cosines("none", 0.8),
        _pair_cosines("full", 0.0),
    ]
    figure = anisotropy_figure(results, "synthetic")
    paths = save(figure, tmp_path / "out" / "a.png")
    assert paths == [tmp_path / "out" / "a.png", tmp_path / "out" / "a.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(paths[1]).getroot().tag.endswith("svg")
    first = paths[1].read_bytes()
    save(anisotropy_figure(results, "synthetic"), tmp_path / "out" / "a")  # a rerun
    assert paths[1].read_bytes() == first


def _pair_cosines(name: str, centre: float):  # type: ignore[no-untyped-def]
    from baihua.eval.anisotropy import PairCosines

    rng = np.random.default_rng(0)
    return PairCosines(
        name,
        {
            "random": np.clip(centre + 0.05 * rng.standard_normal(300), -1, 1),
            "paraphrase": np.clip(centre + 0.15 + 0.05 * rng.standard_normal(100), -1, 1),
            "non-paraphrase": np.clip(centre + 0.05 * rng.standard_normal(100), -1, 1),
        },
    )


def test_plot_anisotropy_command_writes_both_files(
    tiny_bert: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pics" / "aniso"
    args = ["plot", "anisotropy", "--data-dir", str(data_dir), "--task", "TOY", "--model",
            str(tiny_bert), "--pooling", "last-avg", "--whitening", "full,rot-8", "--out",
            str(out), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    header, rule, *rows = [line for line in result.stdout.splitlines() if line]
    assert header.startswith("| transform | mean cos random |")
    assert [row.split(" | ")[0] for row in rows] == ["| none", "| full", "| rot-8"]
    assert (tmp_path / "pics" / "aniso.png").is_file()
    assert (tmp_path / "pics" / "aniso.svg").is_file()


def test_k_sweep_plots_the_eval_result_files_scores(
    tiny_bert: Path, data_dir: Path, tmp_path: Path
) -> None:
    names = ["none", "4", "8", "full", "rot-4", "rot-8"]
    grid = StsEval(data_dir, ["TOY"], ["last-avg"], [parse_transform(n) for n in names],
                   tmp_path / "cache")  # fmt: skip
    results = grid.run(Encoder(str(tiny_bert), pooling="last-avg", device="cpu"))
    write_report(results, tmp_path / "r.json")
    records = json.loads((tmp_path / "r.json").read_text())
    figure = k_sweep_figure(records)
    toy = figure.axes[0]
    lines = {line.get_label(): line for line in toy.lines}
    score = {r.transform: r.scores["TOY"] for r in results}
    whitening = lines["whitening (β=γ=1)"]
    assert list(whitening.get_xdata()) == [0, 1, 2]  # 4, 8, full
    np.testing.assert_allclose(whitening.get_ydata(), [score["4"], score["8"], score["full"]])
    np.testing.assert_allclose(
        lines["rotation (β=γ=0)"].get_ydata(), [score["rot-4"], score["rot-8"]]
    )
    assert lines["none"].get_ydata()[0] == pytest.approx(score["none"])
    assert [t.get_text() for t in toy.get_xticklabels()] == ["4", "8", "full"]

    result = runner.invoke(cli, ["plot", "k-sweep", "--input", str(tmp_path / "r.json"),
                                 "--out", str(tmp_path / "k")])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "k.svg").is_file()


def test_spectrum_plots_the_artifacts_eigenvalues(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    whitening = Whitening(3).fit(rng.standard_normal((500, 6)) * [4, 3, 2, 1, 0.5, 0.1])
    whitening.save_pretrained(tmp_path / "w", spec=SPEC)
    result = runner.invoke(cli, ["plot", "spectrum", "--whitening", str(tmp_path / "w"),
                                 "--out", str(tmp_path / "s")])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    svg = (tmp_path / "s.svg").read_text()
    assert "m cls: whitening fitted on 500 vectors" in svg
    share = np.cumsum(whitening.explained_variance_) / whitening.explained_variance_.sum()
    assert f"k = 3: {share[2]:.1%} of the variance" in svg


def test_spectrum_refuses_a_k_beyond_the_dimensions(tmp_path: Path) -> None:
    whitening = Whitening().fit(np.random.default_rng(0).standard_normal((50, 4)))
    whitening.save_pretrained(tmp_path / "w", spec=SPEC)
    result = runner.invoke(cli, ["plot", "spectrum", "--whitening", str(tmp_path / "w"),
                                 "--out", str(tmp_path / "s"), "--k", "9"])  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip() == "baihua: error: --k must be between 1 and 4, got 9"


def retrieval_records(tmp_path: Path) -> Path:
    results = [
        RetrievalResult("D", "m", "last-avg", t, rerank, dim, {"MRR@10": mrr, "R@10": 0.5},
                        qps, dim * 400, 10 if rerank == "geodesic" else 0)
        for t, rerank, dim, mrr, qps in [
            ("none", "none", 32, 0.5, 1000.0), ("none", "geodesic", 32, 0.52, 80.0),
            ("16", "none", 16, 0.4, 1900.0), ("rot-16", "none", 16, 0.48, 2000.0),
        ]
    ]  # fmt: skip
    write_retrieval_report(results, tmp_path / "ret.json")
    return tmp_path / "ret.json"


def test_retrieval_plots_each_result_at_its_qps_and_bytes(tmp_path: Path) -> None:
    records = json.loads(retrieval_records(tmp_path).read_text())
    figure = retrieval_figure(records)
    by_qps, by_bytes = figure.axes[0], figure.axes[1]
    assert sorted((ln.get_xdata()[0], ln.get_ydata()[0]) for ln in by_qps.lines) == sorted(
        (r["qps"], r["metrics"]["MRR@10"]) for r in records
    )
    assert sorted(ln.get_xdata()[0] for ln in by_bytes.lines) == sorted(
        (r["index_bytes"] + r["graph_bytes"]) / 1e6 for r in records
    )


def test_retrieval_names_the_metrics_a_file_has(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["plot", "retrieval", "--input", str(retrieval_records(tmp_path)),
                                 "--out", str(tmp_path / "r"), "--metric", "nDCG@10"])  # fmt: skip
    assert result.exit_code == 1
    assert "has no metric 'nDCG@10'; it has MRR@10, R@10" in result.stderr


def test_a_file_of_another_kind_is_refused_with_its_producer(tmp_path: Path) -> None:
    path = retrieval_records(tmp_path)
    result = runner.invoke(cli, ["plot", "k-sweep", "--input", str(path), "--out",
                                 str(tmp_path / "k")])  # fmt: skip
    assert result.exit_code == 1
    assert "result 0 has no split, scores, avg; is it from `baihua eval" in result.stderr
