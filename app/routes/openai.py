"""OpenAI's `/v1/embeddings` and `/v1/models`, so the official client works unchanged."""

from fastapi import APIRouter, HTTPException, status

from baihua.app.deps import JSON_BODY, ArrivedDep, ClientDep, ServiceDep, SettingsDep
from baihua.app.openapi import PROTECTED_ERRORS, error_responses
from baihua.app.responses import NumpyJSONResponse, openai_embeddings_body
from baihua.app.schemas.common import check_dimensions
from baihua.app.schemas.openai import (
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIModel,
    OpenAIModelList,
)
from baihua.serving.batcher import EmbedOptions
from baihua.serving.service import Service

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post(
    "/embeddings",
    response_model=OpenAIEmbeddingResponse,
    response_class=NumpyJSONResponse,
    dependencies=JSON_BODY,
    responses=error_responses(*PROTECTED_ERRORS, 400, 413, 415, 429, 500, openai=True),
)
async def create_embeddings(
    body: OpenAIEmbeddingRequest,
    service: ServiceDep,
    settings: SettingsDep,
    client: ClientDep,
    arrived: ArrivedDep,
) -> NumpyJSONResponse:
    """OpenAI-compatible embeddings (whitened and normalised, as `/embed`'s defaults); any
    `model` name is answered by the served model, named in the response. `input_type:
    "passage"` (our extension) embeds texts to index with the passage prefix."""
    body.check_limits(settings)
    check_dimensions(body.dimensions, service.pipeline.dim)
    options = EmbedOptions(text_type=body.text_type, dimensions=body.dimensions)
    with body.naming_rejected_texts():
        embedded = await service.batcher.embed(
            body.texts_to_embed(), options, client=client, arrived=arrived
        )
    return NumpyJSONResponse(
        openai_embeddings_body(
            embedded,
            model=service.model,
            encoding_format=body.encoding_format,
            max_length=service.pipeline.encoder.max_length,
        )
    )


def _served_model(service: Service) -> OpenAIModel:
    return OpenAIModel(id=service.model, created=service.created)


@router.get("/models", responses=error_responses(*PROTECTED_ERRORS, openai=True))
async def list_models(service: ServiceDep) -> OpenAIModelList:
    """The one model this server embeds with (`/v1/embeddings` answers any name with it)."""
    return OpenAIModelList(data=[_served_model(service)])


@router.get("/models/{model:path}", responses=error_responses(*PROTECTED_ERRORS, 404, openai=True))
async def retrieve_model(model: str, service: ServiceDep) -> OpenAIModel:
    if model != service.model:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no model {model!r}; this server serves {service.model!r}",
        )
    return _served_model(service)
