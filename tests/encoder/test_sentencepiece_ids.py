"""sentencepiece's ids for an XLM-R-style tokenizer against `tokenizers` running the same
`tokenizer.json`: every text of the STS data, random texts made of whitespace, normalised
characters and special tokens, and a variant whose special tokens strip whitespace as XLM-R's
hub tokenizer does; and the serving path never loading `tokenizers` for it."""

from __future__ import annotations

import copy
import json
import random
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from baihua.encoder.models import model_path, resolve_model
from baihua.encoder.sentencepiece_ids import SentencePieceUnigram
from baihua.encoder.tokenizer import TextTokenizer

ALPHABET = [
    *" \t\n\r\u3000\u00a0\u200b\u200d\u2028ab中文。，!?ａＢ１¨ﹰ",
    *("  ", "<s>", "</s>", "<mask>", "<pad>", "<unk>"),
]


@pytest.fixture(scope="module")
def me5_folder() -> Path:
    return Path(model_path(resolve_model("me5-small")))


@pytest.fixture(scope="module")
def spec(me5_folder: Path) -> dict[str, Any]:
    return dict(json.loads((me5_folder / "tokenizer.json").read_text(encoding="utf-8")))


def sts_texts(shared_data: Path) -> list[str]:
    texts: dict[str, None] = {}
    for path in sorted((shared_data / "senteval_cn").glob("*/*.data")):
        for line in path.read_text(encoding="utf-8").splitlines():
            texts.update(dict.fromkeys(line.split("\t")[:2]))
    return list(texts)


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(ALPHABET, k=rng.randint(0, 12))) for _ in range(n)]


def joined_marks() -> list[str]:
    """The alphabet's characters whose NFKC is a space and a mark, each before a zero-width
    joiner: the one place the two normalisers part (see `encoder/sentencepiece_ids.py`)."""
    marks = []
    for c in ALPHABET:
        nfkc = unicodedata.normalize("NFKC", c)
        if nfkc.startswith(" ") and not nfkc.isspace():
            marks.append(c)
    assert marks == ["¨", "ﹰ"]
    return [mark + "\u200d" for mark in marks]


def reference(spec: dict[str, Any], texts: list[str]) -> list[list[int]]:
    return [e.ids for e in Tokenizer.from_str(json.dumps(spec)).encode_batch(texts)]


def path_score(spec: dict[str, Any], ids: list[int]) -> float:
    return sum(spec["model"]["vocab"][i][1] for i in ids)


def test_every_sts_text_gets_the_ids_tokenizers_gives(
    spec: dict[str, Any], shared_data: Path
) -> None:
    """Exact but for ties: where sentencepiece's float32 sums pick another segmentation of the
    same score (a run of '*'), the two paths must score the same and be rare."""
    texts = sts_texts(shared_data)
    ours, _ = SentencePieceUnigram(spec).encode(texts, 512)
    theirs = reference(spec, texts)
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert len(texts) > 170_000
    assert len(differ) <= len(texts) // 100_000
    for i in differ:
        assert path_score(spec, ours[i]) == pytest.approx(path_score(spec, theirs[i]), abs=1e-4)


@pytest.mark.parametrize("strips", [False, True], ids=["me5", "xlmr-hub-stripping"])
def test_whitespace_and_special_tokens_agree_with_tokenizers(
    spec: dict[str, Any], strips: bool
) -> None:
    """Equal but where a character that normalises to a space and a mark (NFKC of '¨' is ' ̈')
    is followed by a zero-width joiner: `tokenizers` normalises that grapheme cluster whole,
    sentencepiece a character at a time."""
    if strips:  # XLM-R's hub tokenizer: <mask> takes the spaces before it
        spec = copy.deepcopy(spec)
        for token in spec["added_tokens"]:
            token["lstrip"] = token["content"] == "<mask>"
            token["rstrip"] = token["content"] == "</s>"
    texts = [
        "",
        " ",
        "a ",
        " a",
        "a  b",
        "中文\u3000",
        "\u200d如何\u200d？\u200d",
        *random_texts(5000),
    ]
    ours, theirs = SentencePieceUnigram(spec).encode(texts, 512)[0], reference(spec, texts)
    differ = [text for text, a, b in zip(texts, ours, theirs, strict=True) if a != b]
    assert all(any(pair in text for pair in joined_marks()) for text in differ)
    assert len(differ) < len(texts) // 100


def test_cuts_texts_over_the_limit_keeping_special_tokens(spec: dict[str, Any]) -> None:
    texts = ["长" * 40, "这是一个句子。" * 10, "短", "x <mask> " * 9]
    ids, n_tokens = SentencePieceUnigram(spec).encode(texts, 8)
    full = reference(spec, texts)
    assert n_tokens.tolist() == [len(f) for f in full]
    assert ids == [f if len(f) <= 8 else f[:7] + f[-1:] for f in full]


@pytest.mark.parametrize(
    "change",
    ["byte_fallback", "no_collapse", "normalized_added", "prepend_first", "bert_tokenizer"],
)
def test_refuses_pipelines_it_does_not_reproduce(
    spec: dict[str, Any], tiny_bert: Path, change: str
) -> None:
    assert SentencePieceUnigram.supports(spec)
    spec = copy.deepcopy(spec)
    if change == "byte_fallback":
        spec["model"]["byte_fallback"] = True
    elif change == "no_collapse":
        spec["normalizer"]["normalizers"] = spec["normalizer"]["normalizers"][:1]
    elif change == "normalized_added":
        spec["added_tokens"][0]["normalized"] = True
    elif change == "prepend_first":
        spec["pre_tokenizer"]["prepend_scheme"] = "first"
    else:
        spec = json.loads((tiny_bert / "tokenizer.json").read_text(encoding="utf-8"))
    assert not SentencePieceUnigram.supports(spec)


def test_serving_ids_leave_tokenizers_unloaded_until_offsets_are_asked(me5_folder: Path) -> None:
    tokenizer = TextTokenizer.from_pretrained(me5_folder)
    ids, _ = tokenizer.encode(["query: 今天天气很好", "passage: 手机"], 512)
    assert tokenizer.backend_loaded is False
    encoding = tokenizer.encode_one("query: 今天天气很好")
    assert tokenizer.backend_loaded is True
    assert encoding.ids == ids[0]
    assert tokenizer.decode(ids[1]) == "passage: 手机"


def test_lower_casing_runs_on_tokenizers(me5_folder: Path) -> None:
    tokenizer = TextTokenizer.from_pretrained(me5_folder)
    tokenizer.lower_case()
    assert tokenizer.encode(["HELLO"], 512)[0] == tokenizer.encode(["hello"], 512)[0]
    assert tokenizer.backend_loaded is True


def test_a_roberta_post_processor_puts_the_same_special_tokens_around(
    spec: dict[str, Any],
) -> None:
    """XLM-R's hub files name the special tokens with RobertaProcessing instead of a template."""
    spec = copy.deepcopy(spec)
    spec["post_processor"] = {
        "type": "RobertaProcessing",
        "sep": ["</s>", 2],
        "cls": ["<s>", 0],
        "trim_offsets": True,
        "add_prefix_space": True,
    }
    texts = ["今天天气很好", "a <mask> b ", *random_texts(500, seed=1)]
    texts = [text for text in texts if not any(pair in text for pair in joined_marks())]
    assert SentencePieceUnigram(spec).encode(texts, 512)[0] == reference(spec, texts)
