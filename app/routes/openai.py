from fastapi import APIRouter

from baihua.app.batcher import EmbedOptions
from baihua.app.deps import ClientDep, ServiceDep, SettingsDep
from baihua.app.responses import NumpyJSONResponse, openai_embeddings_body
from baihua.app.schemas import OpenAIEmbeddingRequest, OpenAIEmbeddingResponse

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/embeddings", response_model=OpenAIEmbeddingResponse, response_class=NumpyJSONResponse
)
async def create_embeddings(
    body: OpenAIEmbeddingRequest, service: ServiceDep, settings: SettingsDep, client: ClientDep
) -> NumpyJSONResponse:
    """OpenAI-compatible embeddings (queries, whitened and normalised, as `/embed`'s defaults);
    any `model` name is answered by the served model, named in the response."""
    body.check_limits(settings)
    body.check_dimensions(service.pipeline.dim)
    with body.naming_rejected_texts():
        embedded = await service.batcher.embed(body.texts_to_embed(), EmbedOptions(), client=client)
    return NumpyJSONResponse(
        openai_embeddings_body(
            embedded,
            model=service.model,
            encoding_format=body.encoding_format,
            max_length=service.pipeline.encoder.max_length,
        )
    )
