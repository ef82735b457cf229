from fastapi import APIRouter

from baihua.app.batcher import EmbedOptions
from baihua.app.deps import ClientDep, ServiceDep, SettingsDep
from baihua.app.responses import NumpyJSONResponse
from baihua.app.schemas import EmbedRequest, EmbedResponse

router = APIRouter(tags=["embeddings"])


@router.post("/embed", response_model=EmbedResponse, response_class=NumpyJSONResponse)
async def embed(
    body: EmbedRequest, service: ServiceDep, settings: SettingsDep, client: ClientDep
) -> NumpyJSONResponse:
    """Embed texts; `truncated` flags texts cut at the model's token limit."""
    body.check_limits(settings)
    options = EmbedOptions(body.text_type, body.whiten, body.normalize)
    with body.naming_rejected_texts():
        embedded = await service.batcher.embed(body.texts, options, client=client)
    return NumpyJSONResponse(
        {
            "embeddings": embedded.vectors,
            "dim": embedded.vectors.shape[1],
            "truncated": embedded.truncated,
            "model": service.model,
        }
    )
