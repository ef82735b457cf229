import dataclasses
import importlib.metadata
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from baihua.core.files import PARTIAL_SUFFIX
from baihua.core.spec import EmbeddingSpec
from baihua.whitening import (
    ArtifactError,
    ArtifactMismatchError,
    TransformMetadata,
    Whitening,
    artifact,
    check_compatible,
    load_artifact,
    load_transform,
    save_artifact,
)

MODEL = "intfloat/multilingual-e5-small"
SPEC = EmbeddingSpec(model=MODEL, weights="a" * 64, pooling="mean", max_length=64)


def _vectors(seed: int, n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, d) + rng.uniform(-5, 5, d)


def _fitted(seed: int = 0, n_components: int = 4) -> Whitening:
    return Whitening(n_components=n_components, beta=0.5, gamma=0.8).fit(_vectors(seed, 80, 6))


def _save(w: Whitening, path: Path) -> None:
    w.save_pretrained(path, spec=SPEC, text_type="query")


def _metadata(**changes: object) -> TransformMetadata:
    fields: dict[str, object] = dict(
        method="whitening",
        spec=SPEC.to_dict(),
        n_features_in=6,
        n_components=4,
        beta=1.0,
        gamma=1.0,
        n_samples=80,
    )
    return TransformMetadata.model_validate(fields | changes)


def test_save_then_load_gives_identical_transform_and_fitted_attributes(tmp_path: Path) -> None:
    w = _fitted()
    _save(w, tmp_path / "artifact")
    loaded = Whitening.from_pretrained(tmp_path / "artifact")
    x = _vectors(1, 10, 6)
    np.testing.assert_array_equal(loaded.transform(x), w.transform(x))
    for name in ("mean_", "components_", "explained_variance_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(w, name))
    assert (loaded.n_components, loaded.beta, loaded.gamma) == (4, 0.5, 0.8)
    assert loaded.eigenvalue_floor == w.eigenvalue_floor
    assert (loaded.n_components_, loaded.n_features_in_, loaded.n_samples_seen_) == (4, 6, 80)


def test_loaded_whitening_continues_streaming_like_the_original(tmp_path: Path) -> None:
    w = _fitted()
    _save(w, tmp_path / "artifact")
    loaded = Whitening.from_pretrained(tmp_path / "artifact")
    more = _vectors(2, 40, 6)
    np.testing.assert_array_equal(
        loaded.partial_fit(more).components_, w.partial_fit(more).components_
    )
    assert loaded.n_samples_seen_ == 120


def test_metadata_records_what_the_transform_was_fitted_for(tmp_path: Path) -> None:
    _save(_fitted(), tmp_path / "artifact")
    stored = json.loads((tmp_path / "artifact" / "transform.json").read_text())
    expected = {
        "method": "whitening",
        "spec": SPEC.to_dict(),
        "text_type": "query",
        "n_features_in": 6,
        "n_components": 4,
        "beta": 0.5,
        "gamma": 0.8,
        "n_samples": 80,
        "library_version": importlib.metadata.version("baihua"),
    }
    assert {key: stored[key] for key in expected} == expected
    created = datetime.fromisoformat(stored["created"])
    assert created.tzinfo is not None
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)
    assert sorted(p.name for p in (tmp_path / "artifact").iterdir()) == [
        "model.safetensors",
        "transform.json",
    ]


def test_library_version_falls_back_when_the_package_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert _metadata().library_version == "0+unknown"


def test_load_transform_dispatches_on_method_and_sets_metadata(tmp_path: Path) -> None:
    w = _fitted()
    _save(w, tmp_path / "artifact")
    loaded = load_transform(tmp_path / "artifact")
    assert isinstance(loaded, Whitening)
    assert loaded.metadata.spec == SPEC.to_dict()
    x = _vectors(3, 5, 6)
    np.testing.assert_array_equal(loaded.transform(x), w.transform(x))


def test_load_transform_of_an_unavailable_method_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = dict(
        n_levels=1, n_steps=1, hidden=4, lr=1e-3, epochs=1, batch_size=2, weight_decay=0.0, seed=0
    )
    save_artifact(tmp_path / "flow", {"w": np.zeros(2)}, _metadata(method="flow", flow=flow))
    # As in a build without the flow loader.
    monkeypatch.delitem(artifact._LOADERS, "flow")
    with pytest.raises(ArtifactError, match="'flow' transform, which this version"):
        load_transform(tmp_path / "flow")
    with pytest.raises(ArtifactError, match="'flow' transform, not whitening"):
        Whitening.from_pretrained(tmp_path / "flow")


def test_check_compatible_accepts_the_fitted_space() -> None:
    check_compatible(_metadata(), SPEC)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weights", "b" * 64),
        ("pooling", "first-last-avg"),
        ("max_length", 128),
        ("query_prefix", "query: "),
        ("dtype", "bfloat16"),
        ("backend", "onnx"),
    ],
)
def test_check_compatible_names_the_differing_field_old_and_new(field: str, value: object) -> None:
    other = dataclasses.replace(SPEC, **{field: value})
    with pytest.raises(ArtifactMismatchError) as raised:
        check_compatible(_metadata(), other, path="artifacts/zh")
    message = str(raised.value)
    assert "whitening artifact artifacts/zh was made in another vector space" in message
    old = getattr(SPEC, field)
    shown = repr(old[:12] + "…") if field == "weights" else repr(old)
    assert f"{field} {shown} → " in message
    assert raised.value.differences == {field: (old, value)}
    assert isinstance(raised.value, ArtifactError) and isinstance(raised.value, ValueError)


def test_another_model_name_with_the_same_weights_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check_compatible(_metadata(), dataclasses.replace(SPEC, model="/models/e5-small"))
    assert "model 'intfloat/multilingual-e5-small' → '/models/e5-small'" in caplog.text
    assert "cannot change vectors" in caplog.text


def test_the_encoder_space_is_checked_not_the_transform_in_the_spec() -> None:
    check_compatible(_metadata(), SPEC.with_transform("c" * 64, 4))


def test_an_artifact_from_before_specs_is_checked_on_what_it_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _save(_fitted(), tmp_path / "artifact")
    stored = json.loads((tmp_path / "artifact" / "transform.json").read_text())
    del stored["spec"], stored["text_type"]
    stored |= {"model": MODEL, "pooling": "mean", "max_length": 64}
    (tmp_path / "artifact" / "transform.json").write_text(json.dumps(stored))
    loaded = load_transform(tmp_path / "artifact")
    loaded.check_compatible(SPEC)
    assert "not recorded, so not checked" in caplog.text and "weights" in caplog.text
    with pytest.raises(ArtifactMismatchError, match="model 'intfloat/multilingual-e5-small' →"):
        loaded.check_compatible(dataclasses.replace(SPEC, model="bert-base-chinese"))
    with pytest.raises(ArtifactMismatchError, match="max_length 64 → 128"):
        loaded.check_compatible(dataclasses.replace(SPEC, max_length=128))


def test_digest_is_kept_by_save_and_load_and_changed_by_a_refit(tmp_path: Path) -> None:
    w = _fitted()
    _save(w, tmp_path / "artifact")
    assert load_transform(tmp_path / "artifact").digest() == w.digest()
    assert _fitted(seed=1).digest() != w.digest()
    assert Whitening(4, beta=0.5, gamma=0.8).fit(_vectors(0, 80, 6)).digest() == w.digest()
    assert Whitening(4, beta=0.0, gamma=0.8).fit(_vectors(0, 80, 6)).digest() != w.digest()


def test_metadata_with_a_malformed_spec_is_invalid() -> None:
    with pytest.raises(ValueError, match="spec field max_length has the wrong type"):
        _metadata(spec=SPEC.to_dict() | {"max_length": "64"})


def test_load_from_a_missing_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=re.escape(f"{tmp_path / 'missing'} does not exist")):
        Whitening.from_pretrained(tmp_path / "missing")


def test_load_from_a_folder_without_metadata_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ArtifactError, match=re.escape(f"{tmp_path / 'empty'} has no transform.json")
    ):
        load_transform(tmp_path / "empty")


def test_load_without_weights_names_the_path(tmp_path: Path) -> None:
    _save(_fitted(), tmp_path / "artifact")
    (tmp_path / "artifact" / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="artifact has no model.safetensors"):
        load_artifact(tmp_path / "artifact")


def test_corrupt_files_raise_artifact_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "artifact"
    _save(_fitted(), path)
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="model.safetensors is corrupt"):
        load_artifact(path)
    (path / "transform.json").write_text('{"method": "whitening"}')
    with pytest.raises(ArtifactError, match="transform.json is not valid transform metadata"):
        load_artifact(path)


def test_tensor_of_the_wrong_shape_is_reported(tmp_path: Path) -> None:
    tensors = {"mean": np.zeros(6), "components": np.zeros((6, 3))}
    save_artifact(tmp_path / "artifact", tensors, _metadata())
    with pytest.raises(ArtifactError, match=r"'components' should have shape \(6, 4\)"):
        Whitening.from_pretrained(tmp_path / "artifact")


def test_saving_over_an_artifact_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "artifact"
    _save(_fitted(seed=0), path)
    newer = _fitted(seed=1, n_components=2)
    _save(newer, path)
    np.testing.assert_array_equal(Whitening.from_pretrained(path).components_, newer.components_)
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_failed_save_leaves_the_existing_artifact_intact_and_no_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "artifact"
    old = _fitted(seed=0)
    _save(old, path)
    real_rename = os.rename

    def failing_rename_of_the_new_artifact(src: str | Path, dst: str | Path) -> None:
        if Path(src).name.endswith(PARTIAL_SUFFIX) and Path(dst) == path:
            raise OSError("disk full")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename_of_the_new_artifact)
    with pytest.raises(OSError, match="disk full"):
        _save(_fitted(seed=1), path)
    np.testing.assert_array_equal(Whitening.from_pretrained(path).components_, old.components_)
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_refuses_to_replace_a_folder_that_is_not_an_artifact(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match=re.escape(f"refusing to replace {tmp_path}:")):
        _save(_fitted(), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_saves_into_an_existing_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "artifact").mkdir()
    _save(_fitted(), tmp_path / "artifact")
    assert load_transform(tmp_path / "artifact").metadata.n_components == 4
