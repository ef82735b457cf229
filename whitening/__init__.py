"""Post-hoc transforms of sentence vectors: BERT-whitening, BERT-flow, streaming moments,
artifacts."""

from whitening.artifact import (
    ArtifactError,
    ArtifactMismatchError,
    FlowParams,
    LoadableTransform,
    Transform,
    TransformMetadata,
    check_compatible,
    load_artifact,
    load_transform,
    read_metadata,
    register_transform,
    save_artifact,
)
from whitening.flow import Flow
from whitening.moments import Moments, check_array
from whitening.whitening import NotFittedError, Whitening

__all__ = [
    "ArtifactError",
    "ArtifactMismatchError",
    "Flow",
    "FlowParams",
    "LoadableTransform",
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
