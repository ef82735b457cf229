"""sentence-transformers folders are read as sentence-transformers reads them: vectors equal its
own on folders built here with every pooling mode, Dense and Normalize modules and prompts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import (
    Dense,
    Normalize,
    Pooling,
    Transformer,
)

from baihua.core.errors import UsageError
from baihua.encoder import Encoder
from baihua.encoder.fingerprint import model_fingerprint
from baihua.encoder.models import model_token_limit, resolve_model

TEXTS = [
    "hello world",
    "bert",
    "我在中国 hello",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z hello world bert bert",
    "的",
    "Hello HELLO World bert 一是不了人",
]
PROMPTS = {"query": "hello: ", "document": "world world "}
ST_MODES = ["cls", "mean", "max", "lasttoken", "weightedmean", "mean_sqrt_len_tokens"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def save_st(
    tiny_bert: Path,
    out: Path,
    mode: str | tuple[str, ...] = "mean",
    *,
    include_prompt: bool = True,
    dense: bool = True,
    normalize: bool = True,
    max_seq_length: int = 20,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
) -> Path:
    torch.manual_seed(1)
    modules: list[torch.nn.Module] = [
        Transformer(str(tiny_bert), max_seq_length=max_seq_length),
        Pooling(32, pooling_mode=mode, include_prompt=include_prompt),
    ]
    pooled = 32 * (1 if isinstance(mode, str) else len(mode))
    if dense:
        modules.append(Dense(pooled, 12, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(
        modules=modules,
        prompts=PROMPTS if prompts is None else prompts,
        default_prompt_name=default_prompt_name,
        device="cpu",
    )
    model.save(str(out))
    return out


def assert_same_vectors(folder: Path, **encoder_args: object) -> None:
    ours = Encoder(str(folder), device="cpu", batch_size=4, **encoder_args)  # type: ignore[arg-type]
    theirs = SentenceTransformer(str(folder), device="cpu")
    for text_type, prompt_name in (("query", "query"), ("passage", "document")):
        expected = theirs.encode(TEXTS, prompt_name=prompt_name, batch_size=3)
        got = ours.encode(TEXTS, text_type=text_type)  # type: ignore[arg-type]
        assert got.shape == expected.shape
        assert cosines(got, expected).min() >= 0.99999, text_type
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ST_MODES)
def test_every_pooling_mode_gives_sentence_transformers_vectors(
    tiny_bert: Path, tmp_path: Path, mode: str
) -> None:
    assert_same_vectors(save_st(tiny_bert, tmp_path / "st", mode))


@pytest.mark.parametrize("mode", ST_MODES)
def test_pooling_without_the_prompt_gives_sentence_transformers_vectors(
    tiny_bert: Path, tmp_path: Path, mode: str
) -> None:
    assert_same_vectors(save_st(tiny_bert, tmp_path / "st", mode, include_prompt=False))


def test_several_modes_are_concatenated_in_their_order(tiny_bert: Path, tmp_path: Path) -> None:
    folder = save_st(tiny_bert, tmp_path / "st", ("max", "cls", "mean"), normalize=False)
    assert resolve_model(str(folder)).pooling == "max+cls+last-avg"
    assert_same_vectors(folder)


def test_without_dense_or_normalize_the_pooled_vectors_come_back(
    tiny_bert: Path, tmp_path: Path
) -> None:
    folder = save_st(tiny_bert, tmp_path / "st", "cls", dense=False, normalize=False)
    assert Encoder(str(folder), device="cpu").dim == 32
    assert_same_vectors(folder)


def test_prompts_and_token_limit_come_from_the_folder(tiny_bert: Path, tmp_path: Path) -> None:
    folder = save_st(tiny_bert, tmp_path / "st", max_seq_length=12)
    spec = resolve_model(str(folder))
    assert (spec.query_prefix, spec.passage_prefix, spec.max_length) == (
        "hello: ",
        "world world ",
        12,
    )
    assert model_token_limit(spec) == 12
    encoder = Encoder(str(folder), device="cpu")
    assert encoder.max_length == 12
    truncated = encoder.encode_poolings(TEXTS, ["last-avg"]).truncated
    assert truncated[3] and not truncated[:3].any()


def test_the_default_prompt_serves_a_text_type_without_its_own(
    tiny_bert: Path, tmp_path: Path
) -> None:
    folder = save_st(tiny_bert, tmp_path / "st", prompts={})
    config = {"prompts": {"instruct": "bert: "}, "default_prompt_name": "instruct"}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    spec = resolve_model(str(folder))
    assert (spec.query_prefix, spec.passage_prefix) == ("bert: ", "bert: ")
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS)  # the default prompt
    ours = Encoder(str(folder), device="cpu").encode(TEXTS, text_type="passage")
    assert cosines(ours, theirs).min() >= 0.99999


def test_legacy_layout_transformer_in_a_subfolder_and_boolean_pooling_keys(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """sentence-transformers 2.x wrote `0_Transformer/`, `max_seq_length` in
    sentence_bert_config.json and `pooling_mode_*_token` flags; hub models still carry them."""
    new = save_st(tiny_bert, tmp_path / "new", "cls", prompts={})
    old = tmp_path / "old"
    shutil.copytree(new / "2_Dense", old / "2_Dense")
    shutil.copytree(new / "3_Normalize", old / "3_Normalize")
    shutil.copytree(tiny_bert, old / "0_Transformer")
    (old / "0_Transformer" / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 20, "do_lower_case": True})
    )
    (old / "1_Pooling").mkdir()
    (old / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": True,
                "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    kinds = ["Transformer", "Pooling", "Dense", "Normalize"]
    paths = ["0_Transformer", "1_Pooling", "2_Dense", "3_Normalize"]
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(zip(kinds, paths, strict=True))
    ]
    (old / "modules.json").write_text(json.dumps(modules))
    assert resolve_model(str(old)).pooling == "cls"
    assert_same_vectors(old)


@pytest.mark.parametrize(
    "module", ["sentence_transformers.models.LayerNorm", "sentence_transformers.models.WordWeights"]
)
def test_a_module_baihua_cannot_run_is_refused_by_name(
    tiny_bert: Path, tmp_path: Path, module: str
) -> None:
    folder = save_st(tiny_bert, tmp_path / "st")
    listed = json.loads((folder / "modules.json").read_text())
    listed.insert(2, {"idx": 2, "name": "x", "path": "", "type": module})
    (folder / "modules.json").write_text(json.dumps(listed))
    with pytest.raises(UsageError, match=module.rpartition(".")[2]):
        Encoder(str(folder), device="cpu")


def test_an_activation_outside_torch_nn_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    folder = save_st(tiny_bert, tmp_path / "st")
    config = json.loads((folder / "2_Dense" / "config.json").read_text())
    config["activation_function"] = "mypackage.evil.Activation"
    (folder / "2_Dense" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="mypackage.evil.Activation"):
        Encoder(str(folder), device="cpu")


def test_another_pooling_than_the_dense_layer_takes_is_refused(
    tiny_bert: Path, tmp_path: Path
) -> None:
    folder = save_st(tiny_bert, tmp_path / "st", ("cls", "mean"))
    with pytest.raises(UsageError, match="Dense layer takes 64 dims"):
        Encoder(str(folder), pooling="cls", device="cpu")


@pytest.mark.parametrize("changed", ["2_Dense/model.safetensors", "1_Pooling/config.json"])
def test_the_weights_fingerprint_covers_every_module(
    tiny_bert: Path, tmp_path: Path, changed: str
) -> None:
    folder = save_st(tiny_bert, tmp_path / "st")
    before = model_fingerprint(str(folder), tmp_path / "cache")
    path = folder / changed
    path.write_bytes(path.read_bytes() + b" ")
    assert model_fingerprint(str(folder), tmp_path / "cache") != before


def test_the_onnx_backend_runs_the_modules_after_the_transformer(
    tiny_bert: Path, tmp_path: Path
) -> None:
    folder = save_st(tiny_bert, tmp_path / "st", "mean", include_prompt=False)
    torch_vectors = Encoder(str(folder), device="cpu", cache_dir=tmp_path).encode(TEXTS)
    onnx = Encoder(str(folder), device="cpu", backend="onnx", cache_dir=tmp_path)
    assert onnx.dim == 12
    assert cosines(onnx.encode(TEXTS), torch_vectors).min() >= 0.9999
