"""Texts → sentence vectors with any BERT-family checkpoint."""

from baihua.encoder.encoder import Encoded, Encoder, ModelLoadError
from baihua.encoder.models import ModelSpec, default_cache_dir, resolve_model
from baihua.encoder.pipeline import (
    Embedded,
    EmbeddingPipeline,
    VectorTransform,
    encoder_spec,
    l2_normalize,
)
from baihua.encoder.pooling import POOLINGS

__all__ = [
    "POOLINGS",
    "Embedded",
    "EmbeddingPipeline",
    "Encoded",
    "Encoder",
    "ModelLoadError",
    "ModelSpec",
    "VectorTransform",
    "default_cache_dir",
    "encoder_spec",
    "l2_normalize",
    "resolve_model",
]
