"""`GET /info`: what this server embeds with, so clients can check before they index."""

from __future__ import annotations

import importlib.metadata

from fastapi import APIRouter

from baihua.app.deps import ServiceDep, SettingsDep
from baihua.app.openapi import PROTECTED_ERRORS, error_responses
from baihua.app.schemas.common import Info, TransformInfo
from baihua.encoder import EmbeddingPipeline, VectorTransform

router = APIRouter(tags=["health"])


def transform_info(transform: VectorTransform | None) -> TransformInfo | None:
    if transform is None:
        return None
    return TransformInfo(
        method="flow" if getattr(transform, "method", "") == "flow" else "whitening",
        n_components=transform.n_components_,
        beta=getattr(transform, "beta", None),
        gamma=getattr(transform, "gamma", None),
    )


def describe(pipeline: EmbeddingPipeline, *, max_texts_per_request: int) -> Info:
    encoder = pipeline.encoder
    return Info(
        model=encoder.name,
        pooling=encoder.pooling,
        dim=pipeline.dim,
        encoder_dim=encoder.dim,
        max_length=encoder.max_length,
        query_prefix=encoder.prefix("query"),
        passage_prefix=encoder.prefix("passage"),
        whitening=transform_info(pipeline.transform),
        backend=getattr(encoder, "backend", "torch"),
        dtype=encoder.dtype,
        device=str(encoder.device),
        version=importlib.metadata.version("baihua"),
        model_id=encoder.name,
        max_input_length=encoder.max_length,
        max_client_batch_size=max_texts_per_request,
    )


@router.get("/info", responses=error_responses(*PROTECTED_ERRORS))
async def info(service: ServiceDep, settings: SettingsDep) -> Info:
    """The served model, pooling, dimensions, token limit, transform, backend and version.

    Also carries TEI's `/info` names (`model_id`, `max_input_length`, `max_client_batch_size`)."""
    return describe(service.pipeline, max_texts_per_request=settings.max_texts_per_request)
