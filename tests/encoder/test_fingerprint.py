import shutil
from pathlib import Path

import pytest

from baihua.encoder import EmbeddingPipeline, Encoder, encoder_spec
from baihua.encoder import fingerprint as fingerprint_module
from baihua.encoder.fingerprint import model_fingerprint
from baihua.whitening import Whitening
from tests.conftest import build_tiny_bert


def test_same_files_same_fingerprint_other_weights_another(tiny_bert: Path, tmp_path: Path):
    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    assert model_fingerprint(str(copy), tmp_path / "c") == model_fingerprint(
        str(tiny_bert), tmp_path / "c"
    )
    other = build_tiny_bert(tmp_path / "other", seed=1)  # same shapes and tokenizer
    assert model_fingerprint(str(other), tmp_path / "c") != model_fingerprint(
        str(tiny_bert), tmp_path / "c"
    )


def test_files_that_do_not_define_the_model_are_not_hashed(tiny_bert: Path, tmp_path: Path):
    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    before = model_fingerprint(str(copy), tmp_path / "c")
    (copy / "model.onnx").write_bytes(b"an exported graph")
    (copy / "README.md").write_text("notes")
    assert model_fingerprint(str(copy), tmp_path / "c") == before
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text() + " ")
    assert model_fingerprint(str(copy), tmp_path / "c") != before


def test_fingerprint_is_hashed_once_then_read_from_the_cache(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = model_fingerprint(str(tiny_bert), tmp_path / "c")
    assert len(list((tmp_path / "c" / "fingerprints").iterdir())) == 1

    def no_hashing(*args: object) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(fingerprint_module, "_digest", no_hashing)
    assert model_fingerprint(str(tiny_bert), tmp_path / "c") == first


def test_a_source_not_on_disk_is_named_not_hashed(tmp_path: Path) -> None:
    assert model_fingerprint("nobody/no-such-model", tmp_path) == "unhashed:nobody/no-such-model"


def test_pipeline_spec_names_encoder_and_transform(tiny_bert: Path, tmp_path: Path) -> None:
    encoder = Encoder(
        str(tiny_bert), pooling="cls", max_length=16, device="cpu", cache_dir=tmp_path
    )
    raw = EmbeddingPipeline(encoder).spec
    assert (raw.model, raw.pooling, raw.max_length, raw.backend, raw.dtype) == (
        str(tiny_bert),
        "cls",
        16,
        "torch",
        "float32",
    )
    assert raw.weights == model_fingerprint(str(tiny_bert), tmp_path)
    assert (raw.transform, raw.n_components) == (None, None)
    whitening = Whitening(8).fit(encoder.encode([f"hello {i} world" for i in range(40)]))
    spec = EmbeddingPipeline(encoder, whitening).spec
    assert (spec.transform, spec.n_components) == (whitening.digest(), 8)
    assert spec.raw == raw == encoder_spec(encoder)
    assert encoder_spec(encoder, pooling="last-avg", max_length=32).pooling == "last-avg"
