"""Post-hoc transforms of sentence vectors: BERT-whitening, streaming moments, artifacts."""

from whitening.artifact import (
    ArtifactError,
    ArtifactMismatchError,
    Transform,
    TransformMetadata,
    check_compatible,
    load_artifact,
    load_transform,
    read_metadata,
    register_transform,
    save_artifact,
)
from whitening.moments import Moments, check_array
from whitening.whitening import NotFittedError, Whitening

__all__ = [
    "ArtifactError",
    "ArtifactMismatchError",
    "Moments",
    "NotFittedError",
    "Transform",
    "TransformMetadata",
    "Whitening",
    "check_array",
    "check_compatible",
    "load_artifact",
    "load_transform",
    "read_metadata",
    "register_transform",
    "save_artifact",
]
