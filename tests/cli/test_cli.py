"""`baihua embed` and `baihua fit` end to end on a tiny random BERT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.encoder import Encoder, l2_normalize
from baihua.jobs.fit import FitJob
from baihua.whitening import Flow, Whitening, load_transform

runner = CliRunner()
SENTENCES = [f"hello world {w} bert" for w in "abcdefghijklmnopqrstuvwxyz"] + [
    "我在中国",
    "这是一个大人",
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.tsv"
    pairs = zip(SENTENCES[::2], SENTENCES[1::2], strict=True)
    path.write_text("".join(f"{a}\t{b}\t1\n" for a, b in pairs), encoding="utf-8")
    return path


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_embed_writes_json_lines_of_normalised_vectors(tiny_bert: Path) -> None:
    code, out, _ = run("embed", "hello world", "我在中国", "--model", str(tiny_bert))
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["hello world", "我在中国"]
    expected = l2_normalize(Encoder(str(tiny_bert)).encode(["hello world", "我在中国"]))
    np.testing.assert_allclose([r["embedding"] for r in rows], expected, atol=1e-5)


def test_embed_reads_stdin_and_writes_npy(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.npy"
    code, _, _ = run(
        "embed", "--model", str(tiny_bert), "--format", "npy", "--output", str(out),
        stdin="hello\nworld\n",
    )  # fmt: skip
    assert code == 0
    assert np.load(out).shape == (2, 32)


def test_fit_writes_an_artifact_that_embed_uses(tiny_bert: Path, corpus: Path, tmp_path: Path):
    artifact = tmp_path / "w8"
    code, _, err = run(
        "fit", "--input", str(corpus), "--model", str(tiny_bert), "--pooling", "last-avg",
        "--n-components", "8", "--out", str(artifact),
    )  # fmt: skip
    assert code == 0, err
    assert not artifact.with_name("w8.partial").exists()
    whitening = Whitening.from_pretrained(artifact)
    assert whitening.n_components_ == 8 and whitening.n_samples_seen_ == len(SENTENCES)
    encoder = Encoder(str(tiny_bert), pooling="last-avg")
    reference = Whitening(8).fit(encoder.encode(SENTENCES))
    np.testing.assert_allclose(whitening.mean_, reference.mean_, atol=1e-5)

    code, out, _ = run(
        "embed", "hello", "--model", str(tiny_bert), "--pooling", "last-avg",
        "--whitening", str(artifact),
    )  # fmt: skip
    assert code == 0
    assert len(json.loads(out)["embedding"]) == 8


def test_fit_jl_draws_the_seeded_projection_without_a_corpus(tiny_bert: Path, tmp_path: Path):
    artifact = tmp_path / "jl8"
    code, _, err = run(
        "fit", "--method", "jl", "--model", str(tiny_bert), "--pooling", "last-avg",
        "--n-components", "8", "--seed", "3", "--out", str(artifact),
    )  # fmt: skip
    assert code == 0, err
    projection = load_transform(artifact)
    assert projection.metadata.method == "jl" and projection.metadata.spec["pooling"] == "last-avg"
    expected = np.random.RandomState(3).normal(0, 1 / np.sqrt(8), (8, 32)).T
    vectors = Encoder(str(tiny_bert), pooling="last-avg").encode(["hello"])
    np.testing.assert_allclose(projection.transform(vectors), vectors @ expected, rtol=1e-5)
    code, out, _ = run(
        "embed", "hello", "--model", str(tiny_bert), "--pooling", "last-avg",
        "--whitening", str(artifact),
    )  # fmt: skip
    assert code == 0 and len(json.loads(out)["embedding"]) == 8


@pytest.mark.parametrize(
    "args,message",
    [(["--method", "jl"], "--method jl needs --n-components"),
     (["--method", "jl", "--n-components", "4", "--input", "c.txt"], "reads no corpus"),
     (["--n-components", "4"], "pass --input")],
)  # fmt: skip
def test_fit_refuses_jl_and_corpus_mistakes(tiny_bert: Path, tmp_path: Path, args, message):
    code, _, err = run("fit", "--model", str(tiny_bert), "--out", str(tmp_path / "a"), *args)
    assert code == 1 and message in err


def test_embed_refuses_an_artifact_fitted_for_another_pooling(
    tiny_bert: Path, corpus: Path, tmp_path: Path
) -> None:
    artifact = tmp_path / "w"
    run(
        "fit", "--input", str(corpus), "--model", str(tiny_bert), "--pooling", "cls",
        "--n-components", "4", "--out", str(artifact),
    )  # fmt: skip
    code, _, err = run(
        "embed", "x", "--model", str(tiny_bert), "--pooling", "last-avg",
        "--whitening", str(artifact),
    )  # fmt: skip
    assert code == 1
    assert "cls" in err and "last-avg" in err


def test_fit_resumes_from_its_checkpoint_after_an_interruption(
    tiny_bert: Path, corpus: Path, tmp_path: Path
) -> None:
    encoder = Encoder(str(tiny_bert), pooling="last-avg", batch_size=4)
    job = FitJob(corpus, tmp_path / "w", encoder, n_components=4, chunk_size=8)
    seen = 0

    def interrupt_after_first_chunk(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.run(progress=interrupt_after_first_chunk)
    assert job.plan(len(SENTENCES)) == 8

    resumed = job.run()
    fresh = FitJob(corpus, tmp_path / "fresh", encoder, n_components=4).run()
    np.testing.assert_allclose(resumed.components_, fresh.components_, atol=1e-6)
    assert resumed.n_samples_seen_ == len(SENTENCES)


def test_fit_resumed_in_another_space_is_refused_naming_the_field(
    tiny_bert: Path, corpus: Path, tmp_path: Path
) -> None:
    encoder = Encoder(str(tiny_bert), pooling="last-avg", batch_size=4)
    job = FitJob(corpus, tmp_path / "w", encoder, n_components=4, chunk_size=8)
    seen = 0

    def interrupt_after_first_chunk(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.run(progress=interrupt_after_first_chunk)
    code, _, err = run(
        "fit", "--input", str(corpus), "--model", str(tiny_bert), "--pooling", "cls",
        "--n-components", "4", "--out", str(tmp_path / "w"),
    )  # fmt: skip
    assert code == 1
    assert "fit checkpoint" in err and "pooling 'last-avg' → 'cls'" in err
    assert "delete" in err and "w.partial" in err


def test_flow_fit_writes_a_flow_that_embed_uses(tiny_bert: Path, corpus: Path, tmp_path: Path):
    artifact = tmp_path / "flow"
    code, _, err = run(
        "fit", "--input", str(corpus), "--model", str(tiny_bert), "--pooling", "last-avg",
        "--method", "flow", "--out", str(artifact),
    )  # fmt: skip
    assert code == 0, err
    flow = load_transform(artifact)
    assert isinstance(flow, Flow) and flow.n_samples_seen_ == len(SENTENCES)
    code, out, _ = run(
        "embed", "hello", "--model", str(tiny_bert), "--pooling", "last-avg",
        "--whitening", str(artifact),
    )  # fmt: skip
    assert code == 0
    vector = np.array(json.loads(out)["embedding"])
    raw = Encoder(str(tiny_bert), pooling="last-avg").encode(["hello"])
    np.testing.assert_allclose(vector, l2_normalize(flow.transform(raw))[0], atol=1e-5)


def test_flow_fit_resumes_with_the_encoded_chunks(tiny_bert: Path, corpus: Path, tmp_path: Path):
    encoder = Encoder(str(tiny_bert), pooling="last-avg", batch_size=4)
    job = FitJob(corpus, tmp_path / "f", encoder, method="flow", chunk_size=8)
    seen = 0

    def interrupt_in_second_chunk(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.run(progress=interrupt_in_second_chunk)
    assert job.plan(len(SENTENCES)) == 8
    resumed = job.run()
    fresh = FitJob(corpus, tmp_path / "fresh", encoder, method="flow").run()
    vectors = encoder.encode(SENTENCES)
    np.testing.assert_allclose(resumed.transform(vectors), fresh.transform(vectors), atol=1e-5)


def test_flow_with_n_components_is_an_error(tiny_bert: Path, corpus: Path, tmp_path: Path):
    code, _, err = run(
        "fit", "--input", str(corpus), "--model", str(tiny_bert), "--method", "flow",
        "--n-components", "8", "--out", str(tmp_path / "f"),
    )  # fmt: skip
    assert code == 1 and "drop --n-components" in err


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"", "0 sentences; whitening needs at least 2"),
        (b"a\tb\n\xff\xfe\tc\n", "corpus.tsv:2: not valid UTF-8"),
        (b"a\tb\nonly one column\n", "corpus.tsv:2: expected text1<TAB>text2"),
    ],
)
def test_fit_rejects_bad_corpora_naming_file_and_line(
    tiny_bert: Path, tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_bytes(content)
    code, _, err = run(
        "fit", "--input", str(path), "--model", str(tiny_bert), "--out", str(tmp_path / "w"),
        "--n-components", "4",
    )  # fmt: skip
    assert code == 1
    assert expected in err
    assert len(err.strip().splitlines()) == 1


def test_fit_rejects_more_components_than_sentences(tiny_bert: Path, corpus: Path, tmp_path):
    code, _, err = run(
        "fit", "--input", str(corpus), "--model", str(tiny_bert), "--out", str(tmp_path / "w"),
        "--n-components", "30",
    )  # fmt: skip
    assert code == 1 and "28 sentences give a covariance of rank at most 27" in err


def test_unknown_pooling_is_one_line_and_exit_1(tiny_bert: Path) -> None:
    code, _, err = run("embed", "x", "--model", str(tiny_bert), "--pooling", "avg")
    assert code == 1 and "unknown pooling 'avg'" in err


def test_installed_command_reports_a_missing_corpus_without_a_traceback(tmp_path: Path) -> None:
    baihua = Path(sys.executable).with_name("baihua")
    result = subprocess.run(
        [str(baihua), "fit", "--input", str(tmp_path / "missing.txt"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith("missing.txt: no such file")
    assert "Traceback" not in result.stderr
