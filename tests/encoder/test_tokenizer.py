"""TextTokenizer against transformers' own tokenizer of the same folder: the same ids, counts,
offsets, special tokens and decoded text, on the tiny BERT and on the real default model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from baihua.encoder.models import model_path, resolve_model
from baihua.encoder.tokenizer import TextTokenizer

EDGE_CASES = ["", " ", "Hello World  ", "ÅÉ ﬁ ①②", "a " * 300, "长" * 600, "\t\n x", "query: 你好!"]


def sentences(shared_data: Path, n: int) -> list[str]:
    texts: list[str] = []
    for path in sorted((shared_data / "senteval_cn").glob("*/*.data")):
        for line in path.read_text(encoding="utf-8").splitlines():
            texts.extend(line.split("\t")[:2])
            if len(texts) >= n:
                return texts + EDGE_CASES
    return texts + EDGE_CASES


@pytest.fixture(scope="module", params=["tiny-bert", "me5-small"])
def folder(request: pytest.FixtureRequest, tiny_bert: Path) -> str:
    if request.param == "tiny-bert":
        return str(tiny_bert)
    return model_path(resolve_model(request.param))


def test_ids_and_counts_equal_transformers(folder: str, shared_data: Path) -> None:
    ours, theirs = TextTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    texts = sentences(shared_data, 3000)
    for max_length in (2, 8, 64, 512):
        ids, n_tokens = ours.encode(texts, max_length)
        assert ids == theirs(texts, truncation=True, max_length=max_length)["input_ids"]
    assert n_tokens.tolist() == [len(i) for i in theirs(texts)["input_ids"]]
    assert ours.pad_id == theirs.pad_token_id
    assert ours.special_ids == set(theirs.all_special_ids)
    assert len(ours) == len(theirs)


def test_offsets_special_tokens_and_decoding_equal_transformers(
    folder: str, shared_data: Path
) -> None:
    ours, theirs = TextTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    for text in sentences(shared_data, 200):
        for special in (True, False):
            encoding = ours.encode_one(text, add_special_tokens=special)
            expected: Any = theirs(
                text,
                add_special_tokens=special,
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
            )
            assert encoding.ids == expected["input_ids"]
            assert [tuple(o) for o in encoding.offsets] == [
                tuple(o) for o in expected["offset_mapping"]
            ]
            assert encoding.special_tokens_mask == expected["special_tokens_mask"]
        for skip in (True, False):
            assert ours.decode(encoding.ids, skip_special_tokens=skip) == theirs.decode(
                encoding.ids, skip_special_tokens=skip
            )
