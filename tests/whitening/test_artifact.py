import importlib.metadata
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

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


def _vectors(seed: int, n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, d) + rng.uniform(-5, 5, d)


def _fitted(seed: int = 0, n_components: int = 4) -> Whitening:
    return Whitening(n_components=n_components, beta=0.5, gamma=0.8).fit(_vectors(seed, 80, 6))


def _save(w: Whitening, path: Path) -> None:
    w.save_pretrained(path, model=MODEL, pooling="mean", max_length=64)


def _metadata(**changes: object) -> TransformMetadata:
    fields: dict[str, object] = dict(
        method="whitening",
        model=MODEL,
        pooling="mean",
        max_length=64,
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
        "model": MODEL,
        "pooling": "mean",
        "max_length": 64,
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
    assert (loaded.metadata.model, loaded.metadata.pooling, loaded.metadata.max_length) == (
        MODEL,
        "mean",
        64,
    )
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


def test_check_compatible_accepts_the_fitted_model_and_pooling() -> None:
    check_compatible(_metadata(), model=MODEL, pooling="mean")


@pytest.mark.parametrize(
    ("model", "pooling"), [("bert-base-chinese", "mean"), (MODEL, "first-last-avg")]
)
def test_check_compatible_names_both_settings_on_mismatch(model: str, pooling: str) -> None:
    with pytest.raises(ArtifactMismatchError) as raised:
        check_compatible(_metadata(), model=model, pooling=pooling, path="artifacts/zh")
    message = str(raised.value)
    assert "whitening artifact artifacts/zh was fitted for" in message
    assert f"model {MODEL!r} pooling 'mean'" in message
    assert f"not model {model!r} pooling {pooling!r}" in message
    assert isinstance(raised.value, ArtifactError) and isinstance(raised.value, ValueError)


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
        if Path(src).name.endswith(".tmp") and Path(dst) == path:
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
