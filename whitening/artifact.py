"""Fitted-transform artifacts: a folder holding ``model.safetensors`` and ``transform.json``.

The metadata names the encoder the transform was fitted for, so that loading it next to another
model or pooling fails loudly instead of returning wrong vectors. Writes are atomic: files go to
a temporary sibling first and are renamed into place only once complete and fsynced.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pydantic
import safetensors
import safetensors.numpy

from baihua.core.errors import BaihuaError
from baihua.core.files import fsync_dir, write_synced

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "transform.json"


class ArtifactError(BaihuaError, ValueError):
    """An artifact folder is missing, incomplete or corrupt."""


class ArtifactMismatchError(ArtifactError):
    """An artifact was fitted for another model or pooling than the one it is used with."""


def _library_version() -> str:
    try:
        return importlib.metadata.version("baihua")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class FlowParams(pydantic.BaseModel):
    """Hyperparameters of a BERT-flow Glow and of its training (see ``whitening.Flow``).

    Stored in the metadata so a flow can be rebuilt from its weights; ``Flow`` also validates its
    hyperparameters with this model, so the constraints live in one place.
    """

    model_config = pydantic.ConfigDict(frozen=True, strict=True)

    n_levels: int = pydantic.Field(ge=1)
    n_steps: int = pydantic.Field(ge=1)
    hidden: int = pydantic.Field(ge=1)
    lr: float = pydantic.Field(gt=0.0, allow_inf_nan=False)
    epochs: int = pydantic.Field(ge=1)
    # ActNorm's data-dependent initialisation needs a variance, hence two vectors per batch.
    batch_size: int = pydantic.Field(ge=2)
    weight_decay: float = pydantic.Field(ge=0.0, allow_inf_nan=False)
    seed: int = pydantic.Field(ge=0)


class TransformMetadata(pydantic.BaseModel):
    """What a fitted transform was fitted on and with; stored as ``transform.json``.

    ``beta`` and ``gamma`` are required for whitening and meaningless for a flow, which needs
    ``flow`` instead.
    """

    model_config = pydantic.ConfigDict(frozen=True)

    method: Literal["whitening", "flow"]
    model: str = pydantic.Field(min_length=1)
    pooling: str = pydantic.Field(min_length=1)
    max_length: int = pydantic.Field(gt=0)
    n_features_in: int = pydantic.Field(gt=0)
    n_components: int = pydantic.Field(gt=0)
    beta: float | None = None
    gamma: float | None = None
    eigenvalue_floor: float = pydantic.Field(default=0.0, ge=0.0)
    flow: FlowParams | None = None
    n_samples: int = pydantic.Field(ge=0)
    library_version: str = pydantic.Field(default_factory=_library_version)
    created: pydantic.AwareDatetime = pydantic.Field(default_factory=lambda: datetime.now(UTC))

    @pydantic.model_validator(mode="after")
    def _check_method_fields(self) -> TransformMetadata:
        if self.method == "whitening" and (self.beta is None or self.gamma is None):
            raise ValueError("whitening metadata needs beta and gamma")
        if self.method == "flow" and self.flow is None:
            raise ValueError("flow metadata needs its flow hyperparameters")
        return self


class Transform(Protocol):
    """A fitted transform as loaded from an artifact."""

    metadata: TransformMetadata
    n_components_: int

    def transform(self, X: Any) -> np.ndarray: ...

    def check_compatible(self, *, model: str, pooling: str) -> None: ...


class LoadableTransform:
    """Base of the transforms saved by ``save_pretrained`` and loaded by ``from_pretrained``
    (which sets ``metadata``); a subclass says what it stores in ``_artifact_contents``."""

    metadata: TransformMetadata
    n_features_in_: int
    n_components_: int
    n_samples_seen_: int

    def _check_is_fitted(self, method: str) -> None:
        raise NotImplementedError

    def _artifact_contents(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The tensors to store, and the metadata fields of this method (``method`` included)."""
        raise NotImplementedError

    def save_pretrained(
        self, path: str | os.PathLike[str], *, model: str, pooling: str, max_length: int
    ) -> None:
        """Save to an artifact folder, recording the encoder settings the vectors came from.

        Parameters
        ----------
        path : path-like
            Artifact folder; an existing artifact there is replaced atomically.
        model : str
            Encoder name or path; loading next to another model is refused.
        pooling : str
            Pooling of the encoder's hidden states, e.g. ``"last-avg"`` or ``"first-last-avg"``.
        max_length : int
            Token limit the fitting sentences were encoded with.
        """
        self._check_is_fitted("save_pretrained")
        tensors, fields = self._artifact_contents()
        metadata = TransformMetadata(
            model=model,
            pooling=pooling,
            max_length=max_length,
            n_features_in=self.n_features_in_,
            n_components=self.n_components_,
            n_samples=self.n_samples_seen_,
            **fields,
        )
        save_artifact(path, tensors, metadata)

    def check_compatible(self, *, model: str, pooling: str) -> None:
        """Raise ArtifactMismatchError if this was loaded from an artifact fitted for another
        model or pooling; a transform fitted in memory carries no record and is trusted."""
        metadata = getattr(self, "metadata", None)
        if metadata is not None:
            check_compatible(metadata, model=model, pooling=pooling)


_LOADERS: dict[str, Callable[[Path], Transform]] = {}


def register_transform(method: str, loader: Callable[[Path], Transform]) -> None:
    """Make :func:`load_transform` load artifacts whose metadata says ``method`` with ``loader``."""
    _LOADERS[method] = loader


def _check_replaceable(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise ArtifactError(
            f"cannot save an artifact to {path}: it is a file; choose a folder path"
        )
    if any(path.iterdir()) and not (path / METADATA_FILE).is_file():
        raise ArtifactError(
            f"refusing to replace {path}: it is a non-empty folder without {METADATA_FILE}, "
            "so not a transform artifact; choose another path or empty it"
        )


def _move_into_place(staging: Path, path: Path) -> None:
    if not path.exists():
        os.rename(staging, path)
        return
    # A folder cannot be renamed over a non-empty one: set the old one aside, restore on failure.
    displaced = staging.with_name(staging.name + ".old")
    os.rename(path, displaced)
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(displaced, path)
        raise
    shutil.rmtree(displaced)


def save_artifact(
    path: str | os.PathLike[str], tensors: dict[str, np.ndarray], metadata: TransformMetadata
) -> None:
    """Write an artifact folder; an existing artifact at ``path`` is replaced once the new one is
    complete on disk.

    Parameters
    ----------
    path : path-like
        Folder to create (parents included) or an existing artifact or empty folder to replace.
    tensors : dict of str to np.ndarray
        Weights, stored with their dtypes in ``model.safetensors``.
    metadata : TransformMetadata
        Stored as ``transform.json``.
    """
    path = Path(path)
    _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        write_synced(staging / WEIGHTS_FILE, weights)
        write_synced(
            staging / METADATA_FILE, metadata.model_dump_json(indent=2, exclude_none=True).encode()
        )
        fsync_dir(staging)
        _move_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(path.parent)


def read_metadata(path: str | os.PathLike[str]) -> TransformMetadata:
    """Read ``transform.json`` of the artifact folder ``path`` without loading its weights."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(
            f"transform artifact {path} does not exist or is not a folder; check the path or "
            "fit one (Whitening.save_pretrained, `baihua fit`)"
        )
    file = path / METADATA_FILE
    if not file.is_file():
        raise ArtifactError(
            f"{path} has no {METADATA_FILE}, so it is not a transform artifact; point to a "
            "folder written by save_pretrained or `baihua fit`"
        )
    try:
        return TransformMetadata.model_validate_json(file.read_bytes())
    except pydantic.ValidationError as error:
        raise ArtifactError(
            f"{file} is not valid transform metadata; fit again\n{error}"
        ) from error


def load_artifact(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], TransformMetadata]:
    """Read an artifact folder written by :func:`save_artifact`: its tensors and metadata."""
    path = Path(path)
    metadata = read_metadata(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{path} has no {WEIGHTS_FILE}; the artifact is incomplete, fit again")
    try:
        tensors = safetensors.numpy.load_file(weights)
    except safetensors.SafetensorError as error:
        raise ArtifactError(f"{weights} is corrupt ({error}); fit the artifact again") from error
    return tensors, metadata


def check_compatible(
    metadata: TransformMetadata,
    *,
    model: str,
    pooling: str,
    path: str | os.PathLike[str] | None = None,
) -> None:
    """Raise :class:`ArtifactMismatchError` unless the transform was fitted for ``model`` and
    ``pooling``; ``path`` only makes the message name the artifact."""
    if metadata.model == model and metadata.pooling == pooling:
        return
    where = f" {path}" if path is not None else ""
    raise ArtifactMismatchError(
        f"{metadata.method} artifact{where} was fitted for model {metadata.model!r} pooling "
        f"{metadata.pooling!r}, not model {model!r} pooling {pooling!r}; fit a transform for "
        "this model and pooling (`baihua fit`) or configure the ones it was fitted for"
    )


def load_transform(path: str | os.PathLike[str]) -> Transform:
    """Load the fitted transform in artifact folder ``path``, whatever its method; the returned
    object has ``.metadata`` set."""
    path = Path(path)
    method = read_metadata(path).method
    if method not in _LOADERS:
        raise ArtifactError(
            f"{path} holds a {method!r} transform, which this version of baihua cannot load; "
            "upgrade baihua"
        )
    return _LOADERS[method](path)
