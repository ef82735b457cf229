"""Encoder behaviour on a tiny random BERT: pooling against sentence-transformers and by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from baihua.encoder import Encoder
from baihua.encoder.batching import length_sorted_batches
from baihua.encoder.encoder import Encoded
from baihua.encoder.models import ModelSpec

TEXTS = [
    "hello world",
    "bert",
    "我在中国 hello",
    "a b c d e f g h i j k l m n o p",
    "的",
    "hello hello hello world world bert bert 一是不了人",
]


@pytest.mark.parametrize("pooling,st_mode", [("last-avg", "mean"), ("cls", "cls")])
def test_pooling_equals_sentence_transformers(tiny_bert: Path, pooling: str, st_mode: str) -> None:
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(tiny_bert), max_seq_length=64)
    st = SentenceTransformer(
        modules=[transformer, models.Pooling(32, pooling_mode=st_mode)], device="cpu"
    )
    expected = st.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    ours = Encoder(str(tiny_bert), pooling=pooling, batch_size=4, device="cpu").encode(TEXTS)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_first_last_avg_uses_first_transformer_layer_not_embeddings(tiny_bert: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    batch = tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
    expected = ((states[1] + states[-1]) / 2).mean(dim=1).numpy()
    wrong = ((states[0] + states[-1]) / 2).mean(dim=1).numpy()
    ours = Encoder(str(tiny_bert), pooling="first-last-avg", device="cpu").encode(TEXTS[:1])
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert not np.allclose(ours, wrong, atol=1e-3)


def test_pooler_pooling_returns_the_pooler_output(tiny_bert: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        expected = model(**tokenizer(TEXTS[:1], return_tensors="pt")).pooler_output.numpy()
    ours = Encoder(str(tiny_bert), pooling="pooler", device="cpu").encode(TEXTS[:1])
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_pooler_on_a_model_without_one_is_a_clear_error(tmp_path: Path) -> None:
    from tests.conftest import build_tiny_bert

    folder = build_tiny_bert(tmp_path / "no-pooler", with_pooler=False)
    with pytest.raises(ValueError, match="no pooler"):
        Encoder(str(folder), device="cpu").encode(TEXTS, pooling="pooler")


def test_results_come_back_in_input_order_whatever_the_batching(tiny_bert: Path) -> None:
    one_by_one = Encoder(str(tiny_bert), pooling="last-avg", batch_size=1, device="cpu")
    batched = Encoder(str(tiny_bert), pooling="last-avg", batch_size=4, device="cpu")
    np.testing.assert_allclose(batched.encode(TEXTS), one_by_one.encode(TEXTS), atol=1e-5)


def test_one_pass_gives_every_pooling_as_separate_calls_do(tiny_bert: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu")
    poolings = ["cls", "last-avg", "first-last-avg", "pooler"]
    together = encoder.encode_poolings(TEXTS, poolings).vectors
    for name in poolings:
        np.testing.assert_allclose(together[name], encoder.encode(TEXTS, pooling=name), atol=1e-6)


def test_truncation_at_max_length_is_reported(tiny_bert: Path) -> None:
    encoder = Encoder(str(tiny_bert), max_length=8, device="cpu")
    encoded = encoder.encode_poolings(["hello", "a b c d e f g h i j k"], ["last-avg"])
    assert encoded.truncated.tolist() == [False, True]
    assert encoded.n_tokens.tolist() == [3, 13]


@pytest.mark.parametrize("prefix", ["", "query: "])
def test_left_truncation_keeps_the_prefix_and_the_end(tiny_bert: Path, prefix: str) -> None:
    spec = ModelSpec("tiny-e5", str(tiny_bert), query_prefix=prefix)
    fixed = len(AutoTokenizer.from_pretrained(tiny_bert)(prefix + "x")["input_ids"]) - 1  # less x
    encoder = Encoder(spec, max_length=fixed + 3, device="cpu")  # room for 3 letters
    long, kept_start, kept_end = "a b c d e f g h i j", "a b c", "h i j"

    def embed(texts: list[str], side: str) -> Encoded:
        return encoder.encode_poolings(texts, ["last-avg"], truncation_side=side)  # type: ignore[arg-type]

    left, right = embed([long], "left"), embed([long], "right")
    assert left.truncated.tolist() == right.truncated.tolist() == [True]
    np.testing.assert_allclose(
        left.vectors["last-avg"], embed([kept_end], "right").vectors["last-avg"], atol=1e-6
    )
    np.testing.assert_allclose(
        right.vectors["last-avg"], embed([kept_start], "right").vectors["last-avg"], atol=1e-6
    )
    short = embed(["hello", kept_end], "left").vectors["last-avg"]  # under the limit: unchanged
    np.testing.assert_allclose(short, embed(["hello", kept_end], "right").vectors["last-avg"])


def test_bfloat16_autocast_stays_close_to_float32(tiny_bert: Path) -> None:
    fp32 = Encoder(str(tiny_bert), device="cpu").encode(TEXTS)
    bf16 = Encoder(str(tiny_bert), device="cpu", dtype="bfloat16").encode(TEXTS)
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cos.min() > 0.99


def test_empty_input_gives_an_empty_matrix(tiny_bert: Path) -> None:
    assert Encoder(str(tiny_bert), device="cpu").encode([]).shape == (0, 32)


def test_unknown_pooling_names_the_valid_ones(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match="first-last-avg"):
        Encoder(str(tiny_bert), pooling="mean", device="cpu")


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    from baihua.encoder import ModelLoadError

    with pytest.raises(ModelLoadError, match="no such folder; `baihua models list`"):
        Encoder(str(tmp_path / "nowhere"), device="cpu")


def test_length_sorted_batches_cover_every_index_once_longest_first() -> None:
    lengths = [3, 9, 1, 7, 7, 2, 5]
    batches = length_sorted_batches(lengths, 3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert [len(b) for b in batches] == [3, 3, 1]
