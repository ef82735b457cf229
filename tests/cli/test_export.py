"""`baihua export`: sentence-transformers loading the folder gives baihua's vectors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.encoder import EmbeddingPipeline, Encoder, encoder_spec
from baihua.whitening import Flow, Whitening

runner = CliRunner()
SUBJECTS = [
    "我",
    "你",
    "他们",
    "今天的天气",
    "这家银行",
    "the model",
    "小王",
    "老师",
    "信用卡",
    "火车",
]
PREDICATES = [
    "很好",
    "想去北京",
    "在中国",
    "不太行",
    "is fast",
    "办了一张卡",
    "要迟到了",
    "喜欢读书",
]
SENTENCES = [f"{s}{p}" for s, p in itertools.product(SUBJECTS, PREDICATES)]  # 80
PROBES = ["今天天气很好", "我想办信用卡", "hello world", "火车要开了，快点"]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def export(*args: str) -> None:
    result = CliRunner().invoke(cli, ["export", *args])
    assert result.exit_code == 0, result.output


def fit_artifact(encoder: Encoder, folder: Path, **params: object) -> Whitening:
    whitening = Whitening(**params).fit(encoder.encode(SENTENCES))  # type: ignore[arg-type]
    whitening.save_pretrained(folder, spec=encoder_spec(encoder))
    return whitening


@pytest.mark.parametrize("pooling", ["last-avg", "cls"])
def test_sentence_transformers_gives_baihuas_vectors_on_the_tiny_bert(
    tiny_bert: Path, tmp_path: Path, pooling: str
) -> None:
    encoder = Encoder(str(tiny_bert), pooling=pooling, device="cpu")
    whitening = fit_artifact(encoder, tmp_path / "w", n_components=16, beta=0.5, gamma=0.8)
    export("--whitening", str(tmp_path / "w"), "--out", str(tmp_path / "st"))
    model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    ours = EmbeddingPipeline(encoder, whitening).embed(PROBES).vectors
    theirs = model.encode(PROBES)
    assert theirs.shape == (len(PROBES), 16)
    assert min_cosine(theirs, ours) >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)


def test_dimensions_export_the_first_components(tiny_bert: Path, tmp_path: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu")
    whitening = fit_artifact(encoder, tmp_path / "w")
    export("--whitening", str(tmp_path / "w"), "--dimensions", "8", "--out", str(tmp_path / "st"))
    theirs = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(PROBES)
    ours = EmbeddingPipeline(encoder, whitening).embed(PROBES, dimensions=8).vectors
    assert min_cosine(theirs, ours) >= 0.9999


def test_export_refuses_a_flow_a_taken_folder_and_too_many_dimensions(
    tiny_bert: Path, tmp_path: Path
) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu")
    fit_artifact(encoder, tmp_path / "w", n_components=8)
    flow = Flow(epochs=1, n_levels=1, n_steps=1, hidden=4).fit(encoder.encode(SENTENCES))
    flow.save_pretrained(tmp_path / "flow", spec=encoder_spec(encoder))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    cases = [
        (["--whitening", str(tmp_path / "flow"), "--out", str(tmp_path / "a")], "not linear"),
        (["--whitening", str(tmp_path / "w"), "--out", str(taken)], "not an empty folder"),
        (
            ["--whitening", str(tmp_path / "w"), "--dimensions", "9", "--out", str(tmp_path / "b")],
            "choose 1 to 8",
        ),
    ]
    for args, message in cases:
        result = runner.invoke(cli, ["export", *args])
        assert result.exit_code == 1 and message in result.stderr, result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_sentence_transformers_gives_baihuas_vectors_on_me5_small(tmp_path: Path) -> None:
    encoder = Encoder("me5-small", device="cpu", max_length=512)
    whitening = fit_artifact(encoder, tmp_path / "w", n_components=64)
    export("--whitening", str(tmp_path / "w"), "--out", str(tmp_path / "st"))
    model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    config = json.loads((tmp_path / "st" / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {
        "query": "query: ",
        "passage": "passage: ",
        "document": "passage: ",
    }
    pipeline = EmbeddingPipeline(encoder, whitening)
    for text_type in ("query", "passage"):
        ours = pipeline.embed(PROBES, text_type=text_type).vectors
        theirs = model.encode(PROBES, prompt_name=text_type)
        assert min_cosine(theirs, ours) >= 0.9999, text_type
    np.testing.assert_allclose(
        model.encode_document(PROBES), model.encode(PROBES, prompt_name="passage"), atol=1e-6
    )


def embed_npy(tmp_path: Path, name: str, *args: str) -> np.ndarray:
    out = tmp_path / f"{name}.npy"
    result = runner.invoke(cli, ["embed", *args, "--format", "npy", "--output", str(out), *PROBES])
    assert result.exit_code == 0, result.output
    return np.load(out)


@pytest.mark.parametrize("pooling", ["last-avg", "cls", "max", "weighted-mean"])
def test_embed_with_the_export_equals_embed_with_the_artifact(
    tiny_bert: Path, tmp_path: Path, pooling: str
) -> None:
    """The round trip: `baihua embed --model <export>` reads the folder's Pooling, Dense and
    Normalize modules and its token limit, and gives the whitened vectors."""
    encoder = Encoder(str(tiny_bert), pooling=pooling, device="cpu")
    fit_artifact(encoder, tmp_path / "w", n_components=16, beta=0.5, gamma=0.8)
    export("--whitening", str(tmp_path / "w"), "--out", str(tmp_path / "st"))
    for text_type in ("query", "passage"):
        flags = ["--text-type", text_type]
        whitened = embed_npy(
            tmp_path, "w", "--model", str(tiny_bert), "--pooling", pooling,
            "--whitening", str(tmp_path / "w"), *flags,
        )  # fmt: skip
        exported = embed_npy(tmp_path, "st", "--model", str(tmp_path / "st"), *flags)
        assert exported.shape == whitened.shape == (len(PROBES), 16)
        assert np.sum(exported * whitened, axis=1).min() >= 0.99999, text_type
