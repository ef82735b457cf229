"""Selection on valid: the choice never depends on test scores; the oracle is reported beside."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.encoder import Encoder
from baihua.eval.datasets import load_task
from baihua.eval.selection import select, selection_path
from baihua.eval.sts import StsEval, StsResult, pair_cosines, spearman
from baihua.eval.transforms import fit_transform, parse_transform
from tests.eval.conftest import pairs, write_task


def grid(scores: dict[tuple[str, str], dict[str, float]], dims: dict[str, int]) -> list[StsResult]:
    """StsResults from (transform, split) → task → score."""
    return [
        StsResult("m", "last-avg", transform, split, scores=dict(by_task), dim=dims[transform])
        for (transform, split), by_task in scores.items()
    ]


SCORES = {
    ("none", "valid"): {"A": 50.0, "B": 30.0},
    ("none", "test"): {"A": 52.0, "B": 31.0},
    ("rot-8", "valid"): {"A": 51.0, "B": 29.0},
    ("rot-8", "test"): {"A": 50.0, "B": 35.0},
    ("jl-8", "valid"): {"A": 40.0, "B": 32.0},
    ("jl-8", "test"): {"A": 41.0, "B": 20.0},
}
DIMS = {"none": 32, "rot-8": 8, "jl-8": 8}


def test_per_task_and_overall_choices_follow_valid_and_the_oracle_follows_test() -> None:
    chosen = select(grid(SCORES, DIMS))
    a, b = chosen.per_task
    assert (a.task, a.chosen.transform, a.chosen_test) == ("A", "rot-8", 50.0)
    assert (a.oracle.transform, a.oracle_test, a.raw_test) == ("none", 52.0, 52.0)
    assert (b.chosen.transform, b.chosen_test, b.oracle.transform) == ("jl-8", 20.0, "rot-8")
    assert chosen.per_task_means() == (41.5, 35.0, 43.5)
    overall = chosen.one_for_all
    # valid means: none 40, rot-8 40 (tie: the first row of the grid wins), jl-8 36
    assert (overall.chosen.transform, overall.chosen_test) == ("none", 41.5)
    assert (overall.oracle.transform, overall.oracle_test) == ("rot-8", 42.5)


def test_changing_test_scores_never_changes_the_choice() -> None:
    rng = np.random.default_rng(0)
    first = select(grid(SCORES, DIMS))
    for _ in range(20):
        shuffled = {
            key: {t: float(rng.uniform(0, 100)) for t in by_task} if key[1] == "test" else by_task
            for key, by_task in SCORES.items()
        }
        again = select(grid(shuffled, DIMS))
        assert [c.chosen for c in again.per_task] == [c.chosen for c in first.per_task]
        assert again.one_for_all.chosen == first.one_for_all.chosen


def test_max_dims_restricts_the_candidates_but_keeps_the_raw_reference() -> None:
    chosen = select(grid(SCORES, DIMS), max_dims=8)
    assert {c.chosen.transform for c in chosen.per_task} <= {"rot-8", "jl-8"}
    assert chosen.per_task[0].oracle.transform == "rot-8"
    assert chosen.per_task[0].raw_test == 52.0
    with pytest.raises(ValueError, match="at most 4 dims"):
        select(grid(SCORES, DIMS), max_dims=4)


def test_selecting_on_test_or_without_valid_scores_is_refused() -> None:
    with pytest.raises(ValueError, match="oracle"):
        select(grid(SCORES, DIMS), select_on="test")
    only_test = {k: v for k, v in SCORES.items() if k[1] == "test"}
    with pytest.raises(ValueError, match="valid"):
        select(grid(only_test, DIMS))


def test_all_tasks_fit_equals_one_fit_on_every_tasks_sentences(
    tiny_bert: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    write_task(data_dir, "TWO", {"valid": pairs(12, 5), "test": pairs(15, 6)})
    encoder = Encoder(str(tiny_bert), device="cpu")
    tasks = ["TOY", "TWO"]
    specs = [parse_transform("abtt1-8"), parse_transform("jl-8")]
    results = StsEval(
        data_dir=data_dir,
        tasks=tasks,
        poolings=["cls"],
        transforms=specs,
        cache_dir=tmp_path / "c",
        fit_on="all-tasks",
        splits=("test",),
    ).run(encoder)
    loaded = [load_task(data_dir, t) for t in tasks]
    every = [s for task in loaded for s in task.texts()]
    fit = encoder.encode(every, pooling="cls")
    for spec, result in zip(specs, results, strict=True):
        transform = fit_transform(spec, fit)
        assert transform is not None and result.dim == 8
        for task in loaded:
            test = task.splits["test"]
            a = transform.transform(encoder.encode(test.text1, pooling="cls"))
            b = transform.transform(encoder.encode(test.text2, pooling="cls"))
            expected = 100 * spearman(pair_cosines(a, b), np.asarray(test.labels))
            assert result.scores[task.name] == pytest.approx(expected, abs=1e-3)


def test_fit_on_named_splits_uses_only_those_sentences(
    tiny_bert: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu")

    def score(fit_on: str) -> float:
        grid = StsEval(
            data_dir=data_dir,
            tasks=["TOY"],
            poolings=["cls"],
            transforms=[parse_transform("8")],
            cache_dir=tmp_path / "c",
            fit_on=fit_on,
        )
        return grid.run(encoder)[0].scores["TOY"]

    task = load_task(data_dir, "TOY")
    fit_texts = task.splits["train"].texts() + task.splits["valid"].texts()
    transform = fit_transform(parse_transform("8"), encoder.encode(fit_texts, pooling="cls"))
    assert transform is not None
    test = task.splits["test"]
    a = transform.transform(encoder.encode(test.text1, pooling="cls"))
    b = transform.transform(encoder.encode(test.text2, pooling="cls"))
    expected = 100 * spearman(pair_cosines(a, b), np.asarray(test.labels))
    assert score("train+valid") == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="fit_on 'bogus'"):
        score("bogus")


def test_cli_select_on_valid_prints_and_writes_the_choice(
    tiny_bert: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    write_task(data_dir, "TWO", {"valid": pairs(12, 5), "test": pairs(15, 6)})
    out = tmp_path / "r.json"
    args = ["eval", "--data-dir", str(data_dir), "--model", str(tiny_bert), "--tasks",
            "TOY,TWO", "--pooling", "cls", "--whitening", "none,rot-8,jl-8,abtt1-8",
            "--splits", "valid,test", "--select-on", "valid", "--max-dims", "8",
            "--output", str(out), "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Chosen on valid among rows of at most 8 dims" in result.stdout
    assert "| avg, one row for all |" in result.stdout
    written = json.loads(selection_path(out).read_text())[0]
    assert [c["task"] for c in written["per_task"]] == ["TOY", "TWO"]
    assert written["per_task"][0]["chosen"]["dim"] == 8


@pytest.mark.parametrize(
    "args,message",
    [(["--select-on", "valid"], "--select-on valid needs --splits valid,test"),
     (["--splits", "valid,test", "--max-dims", "8"], "add --select-on valid"),
     (["--splits", "valid,test", "--select-on", "test"], "oracle")],
)  # fmt: skip
def test_cli_selection_mistakes_exit_1_with_a_message(
    tiny_bert: Path,
    data_dir: Path,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    base = ["eval", "--data-dir", str(data_dir), "--model", str(tiny_bert), "--tasks", "TOY",
            "--whitening", "none,rot-8", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    result = CliRunner().invoke(cli, [*base, *args])
    assert result.exit_code == 1, result.output
    assert message in result.stderr
