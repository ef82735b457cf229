"""The STS evaluation: metric, task folders, transform grammar, vector cache, CLI table."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.core.spec import EmbeddingSpec, SpecMismatchError
from baihua.encoder import Encoder
from baihua.eval.cache import VectorCache
from baihua.eval.datasets import DatasetError, load_task, task_names
from baihua.eval.sts import StsEval, pair_cosines, spearman
from baihua.eval.transforms import parse_transform
from tests.eval.conftest import WORDS, write_task


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.floats(-1, 1)), min_size=3, max_size=40).filter(
        lambda xs: len({x for x, _ in xs}) > 1 and len({y for _, y in xs}) > 1
    )
)
def test_spearman_equals_scipy_with_ties(values: list[tuple[int, float]]) -> None:
    labels, scores = (np.array(v, dtype=float) for v in zip(*values, strict=True))
    assert spearman(scores, labels) == pytest.approx(spearmanr(scores, labels).statistic, abs=1e-9)


def test_task_names_are_folders_with_a_test_split(data_dir: Path) -> None:
    assert task_names(data_dir) == ["PAWSX", "TOY"]


def test_load_task_reads_every_split(data_dir: Path) -> None:
    task = load_task(data_dir, "TOY")
    assert {s: len(v) for s, v in task.splits.items()} == {"train": 30, "valid": 10, "test": 20}
    assert len(task.texts()) == 120


@pytest.mark.parametrize(
    "line,message",
    [("a\tb", "TOY.test.data:2: expected text1<TAB>text2<TAB>label, got 2 columns"),
     ("a\tb\tfive", "TOY.test.data:2: label 'five' is not a number")],
)  # fmt: skip
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    write_task(tmp_path, "TOY", {"test": ["x\ty\t1", line]})
    with pytest.raises(DatasetError, match=message):
        load_task(tmp_path, "TOY")


def test_missing_task_folder_lists_the_tasks_there(data_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"ATEC: no such task folder .*PAWSX"):
        load_task(data_dir, "ATEC")


@pytest.mark.parametrize(
    "name,method,k,beta,gamma",
    [
        ("none", "none", None, 1.0, 1.0),
        ("full", "whitening", None, 1.0, 1.0),
        ("256", "whitening", 256, 1.0, 1.0),
        ("rot-128", "whitening", 128, 0.0, 0.0),
        ("rot-full", "whitening", None, 0.0, 0.0),
        ("b0.5g0.5-64", "whitening", 64, 0.5, 0.5),
        ("flow", "flow", None, 1.0, 1.0),
    ],
)
def test_transform_grammar(name: str, method: str, k: int | None, beta: float, gamma: float):
    spec = parse_transform(name)
    assert (spec.method, spec.n_components, spec.beta, spec.gamma) == (method, k, beta, gamma)


@pytest.mark.parametrize("name", ["whiten", "rot-", "0", "b1g-64", "rot-abc"])
def test_unknown_transform_names_are_errors(name: str) -> None:
    with pytest.raises(ValueError, match="transform"):
        parse_transform(name)


SPACE = EmbeddingSpec(model="m", weights="a" * 64, pooling="cls", max_length=64)


def fake_encode(texts: list[str], poolings: list[str]) -> dict[str, np.ndarray]:
    return {p: np.array([[len(t), i] for t in texts], np.float32) for i, p in enumerate(poolings)}


def test_cache_encodes_each_distinct_text_once_and_adds_poolings_later(tmp_path: Path) -> None:
    calls: list[tuple[list[str], list[str]]] = []

    def encode(texts: list[str], poolings: list[str]) -> dict[str, np.ndarray]:
        calls.append((texts, poolings))
        return {
            p: np.array([[len(t), i] for t in texts], np.float32) for i, p in enumerate(poolings)
        }

    cache = VectorCache(tmp_path, SPACE, text_type="query")
    got = cache.get(["a", "bb", "a"], ["cls"], encode)
    np.testing.assert_array_equal(got["cls"][:, 0], [1, 2, 1])
    reopened = VectorCache(tmp_path, SPACE, text_type="query")
    got = reopened.get(["bb", "ccc"], ["cls", "last-avg"], encode)
    np.testing.assert_array_equal(got["last-avg"][:, 0], [2, 3])
    assert calls == [
        (["a", "bb"], ["cls"]),
        (["a", "bb"], ["last-avg"]),
        (["ccc"], ["cls", "last-avg"]),
    ]
    assert reopened.get(["ccc", "a"], ["cls"], encode)["cls"][:, 0].tolist() == [3, 1]
    assert len(calls) == 3


def test_caches_opened_side_by_side_keep_each_others_vectors(tmp_path: Path) -> None:
    """Two evaluations filling one folder at once (two processes) must not drop or misalign
    rows: each `get` reads what the other wrote before adding to it."""
    first = VectorCache(tmp_path, SPACE, text_type="query")
    second = VectorCache(tmp_path, SPACE, text_type="query")
    first.get(["a", "bb"], ["cls"], fake_encode)
    second.get(["ccc"], ["cls"], fake_encode)
    first.get(["dddd"], ["cls"], fake_encode)

    def must_not_encode(texts: list[str], poolings: list[str]) -> dict[str, np.ndarray]:
        raise AssertionError(f"encoded {texts} again")

    reopened = VectorCache(tmp_path, SPACE, text_type="query")
    got = reopened.get(["dddd", "ccc", "bb", "a"], ["cls"], must_not_encode)
    assert got["cls"][:, 0].tolist() == [4, 3, 2, 1]


def test_grid_scores_equal_a_direct_computation(tiny_bert: Path, data_dir: Path, tmp_path: Path):
    encoder = Encoder(str(tiny_bert), device="cpu")
    grid = StsEval(
        data_dir=data_dir,
        tasks=["TOY"],
        poolings=["cls", "last-avg"],
        transforms=[parse_transform("none"), parse_transform("rot-8")],
        cache_dir=tmp_path / "cache",
    )
    results = {(r.pooling, r.transform): r.scores["TOY"] for r in grid.run(encoder)}
    test = load_task(data_dir, "TOY").splits["test"]
    a, b = encoder.encode(test.text1, pooling="cls"), encoder.encode(test.text2, pooling="cls")
    expected = 100 * spearmanr(pair_cosines(a, b), test.labels).statistic
    assert results[("cls", "none")] == pytest.approx(expected, abs=1e-4)
    assert set(results) == {
        ("cls", "none"),
        ("cls", "rot-8"),
        ("last-avg", "none"),
        ("last-avg", "rot-8"),
    }


def test_cli_prints_the_table_and_writes_json(tiny_bert: Path, data_dir: Path, tmp_path: Path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, [
        "eval", "--data-dir", str(data_dir), "--model", str(tiny_bert), "--pooling",
        "cls,first-last-avg", "--whitening", "none,16,rot-8", "--splits", "test",
        "--output", str(out), "--cache-dir", str(tmp_path / "c"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| PAWSX | TOY | avg | w-avg |" in result.stdout
    records = json.loads(out.read_text())
    assert len(records) == 6 and set(records[0]["scores"]) == {"PAWSX", "TOY"}


@pytest.mark.parametrize(
    "args,message",
    [(["--whitening", "none,bogus"], "unknown transform 'bogus'"),
     (["--tasks", "NOPE"], "NOPE: no such task folder"),
     (["--output", "r.txt"], "use a .json, .csv or .md")],
)  # fmt: skip
def test_cli_bad_input_exits_1_with_a_message(
    tiny_bert: Path, data_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = ["eval", "--data-dir", str(data_dir), "--model", str(tiny_bert)]
    result = CliRunner().invoke(cli, base + ["--cache-dir", str(tmp_path), *args])
    assert result.exit_code == 1
    assert message in result.stderr


def test_cache_keeps_vectors_of_different_backends_dtypes_and_recipes_apart(
    tmp_path: Path,
) -> None:
    def key(backend: str, dtype: str, variant: str = "") -> Path:
        space = dataclasses.replace(SPACE, backend=backend, dtype=dtype)
        return VectorCache(tmp_path, space, text_type="q", variant=variant).folder

    assert key("torch", "float32") != key("torch", "bfloat16")
    assert key("torch", "float32") != key("onnx", "float32")
    assert key("onnx-int8", "int8") != key("onnx", "float32")
    assert key("onnx-int8", "int8", "recipe 1") != key("onnx-int8", "int8", "recipe 2")
    assert key("torch", "float32") == key("torch", "float32")


def test_cache_of_another_model_under_the_same_name_is_an_error_naming_the_field(
    tmp_path: Path,
) -> None:
    VectorCache(tmp_path, SPACE, text_type="query").get(["a"], ["cls", "last-avg"], fake_encode)
    retrained = dataclasses.replace(SPACE, weights="b" * 64)
    with pytest.raises(SpecMismatchError, match="weights 'aaaaaaaaaaaa…' → 'bbbbbbbbbbbb…'"):
        VectorCache(tmp_path, retrained, text_type="query")


def test_cache_folders_from_before_specs_are_adopted_and_keep_their_vectors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = VectorCache(tmp_path, SPACE, text_type="query")
    cache.get(["a", "bb"], ["cls"], fake_encode)
    (cache.folder / "specs.json").unlink()  # as written by a version without specs
    with caplog.at_level(logging.WARNING):
        adopted = VectorCache(tmp_path, SPACE, text_type="query")
    assert "predates vector-space records" in caplog.text
    got = adopted.get(["bb", "a"], ["cls"], encode=lambda texts, poolings: pytest.fail("encoded"))
    assert got["cls"][:, 0].tolist() == [2, 1]
    recorded = json.loads((cache.folder / "specs.json").read_text())
    assert recorded == {"cls": SPACE.to_dict()}
    with pytest.raises(SpecMismatchError):
        VectorCache(tmp_path, dataclasses.replace(SPACE, weights="b" * 64), text_type="query")


def test_cli_scores_a_saved_artifact_and_checks_its_pooling(
    tiny_bert: Path, data_dir: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{w} {v}\n" for w in WORDS for v in WORDS))
    artifact = tmp_path / "w8"
    fit = ["fit", "--input", str(corpus), "--model", str(tiny_bert), "--pooling", "cls",
           "--n-components", "8", "--out", str(artifact)]  # fmt: skip
    assert CliRunner().invoke(cli, fit).exit_code == 0
    base = ["eval", "--data-dir", str(data_dir), "--model", str(tiny_bert), "--tasks", "TOY",
            "--fit-on", str(artifact), "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    result = CliRunner().invoke(cli, [*base, "--pooling", "cls"])
    assert result.exit_code == 0, result.output
    assert "| cls | none |" in result.stdout and "| cls | artifact:w8 |" in result.stdout
    mismatch = CliRunner().invoke(cli, [*base, "--pooling", "last-avg"])
    assert mismatch.exit_code == 1 and "pooling 'cls'" in mismatch.stderr
