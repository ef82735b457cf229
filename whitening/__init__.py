"""Post-hoc transforms of sentence vectors: BERT-whitening, BERT-flow, the random-projection
baseline, streaming moments, artifacts."""

from baihua.whitening.artifact import (
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
from baihua.whitening.base import NotFittedError, TransformBase
from baihua.whitening.flow import Flow
from baihua.whitening.moments import Moments, check_array
from baihua.whitening.projection import RandomProjection
from baihua.whitening.whitening import Whitening

__all__ = [
    "ArtifactError",
    "ArtifactMismatchError",
    "Flow",
    "FlowParams",
    "LoadableTransform",
    "Moments",
    "NotFittedError",
    "RandomProjection",
    "Transform",
    "TransformBase",
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
