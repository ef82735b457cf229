"""Fitted-transform artifacts: a folder holding ``model.safetensors`` and ``transform.json``.

The metadata records the space of the vectors the transform was fitted on (an
``EmbeddingSpec``), so that using it after another encoder — another model, pooling, token limit,
prefix, backend or dtype — fails loudly, naming the fields, instead of returning wrong vectors.
Writes are atomic: files go to a temporary sibling first and are renamed into place only once
complete and fsynced.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pydantic
import safetensors
import safetensors.numpy

from baihua.core.errors import BaihuaError
from baihua.core.files import write_folder_atomic, write_synced
from baihua.core.spec import EmbeddingSpec, SpecMismatchError, check_space, library_version
from baihua.core.transform import VectorTransform

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "transform.json"


class ArtifactError(BaihuaError, ValueError):
    """An artifact folder is missing, incomplete or corrupt."""


class ArtifactMismatchError(SpecMismatchError, ArtifactError):
    """An artifact was fitted on vectors of another space than the encoder it is used with."""


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

    ``spec`` is the space of the fitting vectors (``EmbeddingSpec.to_dict()`` of the raw encoder);
    artifacts written before specs existed recorded only ``model``, ``pooling`` and
    ``max_length``, which are read into a partial ``spec``. ``text_type`` says whether the fitting
    sentences were encoded as queries or passages (recorded, not checked: one transform serves
    both sides). ``beta`` and ``gamma`` are required for whitening (``drop_top`` and
    ``shrinkage`` absent mean 0, as in older artifacts) and meaningless for a flow, which needs
    ``flow`` instead; a random projection (``jl``) needs its ``seed``.
    """

    model_config = pydantic.ConfigDict(frozen=True)

    method: Literal["whitening", "flow", "jl"]
    spec: dict[str, Any]
    text_type: Literal["query", "passage"] | None = None
    n_features_in: int = pydantic.Field(gt=0)
    n_components: int = pydantic.Field(gt=0)
    beta: float | None = None
    gamma: float | None = None
    eigenvalue_floor: float = pydantic.Field(default=0.0, ge=0.0)
    drop_top: int | None = pydantic.Field(default=None, ge=0)
    shrinkage: float | None = pydantic.Field(default=None, ge=0.0, allow_inf_nan=False)
    seed: int | None = pydantic.Field(default=None, ge=0)
    flow: FlowParams | None = None
    n_samples: int = pydantic.Field(ge=0)
    library_version: str = pydantic.Field(default_factory=library_version)
    created: pydantic.AwareDatetime = pydantic.Field(default_factory=lambda: datetime.now(UTC))

    @pydantic.model_validator(mode="before")
    @classmethod
    def _read_legacy_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "spec" not in data:
            legacy = ("model", "pooling", "max_length")
            data = {k: v for k, v in data.items() if k not in legacy} | {
                "spec": {k: data[k] for k in legacy if k in data}
            }
        return data

    @pydantic.model_validator(mode="after")
    def _check_spec(self) -> TransformMetadata:
        if "weights" in self.spec:
            EmbeddingSpec.from_dict(self.spec)  # raises, naming the bad field
        elif not {"model", "pooling", "max_length"} <= self.spec.keys():
            raise ValueError("spec needs at least model, pooling and max_length")
        return self

    @pydantic.model_validator(mode="after")
    def _check_method_fields(self) -> TransformMetadata:
        if self.method == "whitening" and (self.beta is None or self.gamma is None):
            raise ValueError("whitening metadata needs beta and gamma")
        if self.method == "flow" and self.flow is None:
            raise ValueError("flow metadata needs its flow hyperparameters")
        if self.method == "jl" and self.seed is None:
            raise ValueError("jl metadata needs its seed")
        return self


class Transform(VectorTransform, Protocol):
    """A fitted transform as loaded from an artifact: the shape every transform has, and the
    artifact's metadata."""

    metadata: TransformMetadata


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
        self,
        path: str | os.PathLike[str],
        *,
        spec: EmbeddingSpec,
        text_type: Literal["query", "passage"] | None = None,
    ) -> None:
        """Save to an artifact folder, recording the space the fitting vectors came from.

        Parameters
        ----------
        path : path-like
            Artifact folder; an existing artifact there is replaced atomically.
        spec : EmbeddingSpec
            The encoder's space (``encoder_spec(encoder)``); loading next to an encoder with
            another space is refused. A transform in ``spec`` is dropped: this one replaces it.
        text_type : "query", "passage" or None
            Which prefix the fitting sentences were encoded with, for the record.
        """
        self._check_is_fitted("save_pretrained")
        tensors, fields = self._artifact_contents()
        metadata = TransformMetadata(
            spec=spec.raw.to_dict(),
            text_type=text_type,
            n_features_in=self.n_features_in_,
            n_components=self.n_components_,
            n_samples=self.n_samples_seen_,
            **fields,
        )
        save_artifact(path, tensors, metadata)

    def digest(self) -> str:
        """sha256 of what this transform computes with (its tensors and method fields): equal for
        a transform and its saved and loaded copy, different after any refit."""
        self._check_is_fitted("digest")
        return transform_digest(*self._artifact_contents())

    def check_compatible(self, spec: EmbeddingSpec) -> None:
        """Raise ArtifactMismatchError if this was loaded from an artifact fitted on vectors of
        another space than ``spec``; a transform fitted in memory carries no record and is
        trusted."""
        metadata = getattr(self, "metadata", None)
        if metadata is not None:
            check_compatible(metadata, spec)


def transform_digest(tensors: dict[str, np.ndarray], fields: dict[str, Any]) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes, and the method fields as JSON."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    fields = {
        k: v.model_dump() if isinstance(v, pydantic.BaseModel) else v for k, v in fields.items()
    }
    digest.update(json.dumps(fields, sort_keys=True).encode())
    return digest.hexdigest()


_LOADERS: dict[str, Callable[[Path], Transform]] = {}


def register_transform(method: str, loader: Callable[[Path], Transform]) -> None:
    """Make :func:`load_transform` load artifacts whose metadata says ``method`` with ``loader``."""
    _LOADERS[method] = loader


def check_replaceable(path: Path) -> None:
    """Raise ArtifactError unless ``path`` is free, an empty folder or an artifact to replace."""
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
    check_replaceable(path)
    weights = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    metadata_json = metadata.model_dump_json(indent=2, exclude_none=True).encode()

    def write(staging: Path) -> None:
        write_synced(staging / WEIGHTS_FILE, weights)
        write_synced(staging / METADATA_FILE, metadata_json)

    write_folder_atomic(path, write)


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
    spec: EmbeddingSpec,
    *,
    path: str | os.PathLike[str] | None = None,
) -> None:
    """Raise :class:`ArtifactMismatchError`, listing the differing fields, unless the transform
    was fitted on vectors of ``spec``'s encoder space; ``path`` only makes the message name the
    artifact."""
    where = f" {path}" if path is not None else ""
    check_space(
        metadata.spec,
        spec.raw,
        what=f"{metadata.method} artifact{where}",
        hint="fit a transform for this encoder (`baihua fit`) or configure the encoder it was "
        "fitted for",
        error=ArtifactMismatchError,
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
