"""Post-hoc transforms of sentence vectors: BERT-whitening, BERT-flow, the random-projection
baseline, streaming moments, artifacts."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from baihua.whitening.moments import Moments, check_array
from baihua.whitening.projection import RandomProjection
from baihua.whitening.whitening import Whitening

if TYPE_CHECKING:
    from baihua.whitening.flow import Flow


def __getattr__(name: str) -> Any:
    """`Flow` is imported when first used: it needs torch, which serving does not."""
    if name == "Flow":
        from baihua.whitening.flow import Flow

        return Flow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load_flow(path: Path) -> Transform:
    from baihua.whitening.flow import Flow

    return Flow.from_pretrained(path)


register_transform("flow", _load_flow)

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
