from fastapi import APIRouter

from baihua.app.batcher import EmbedOptions
from baihua.app.deps import ServiceDep, SettingsDep
from baihua.app.responses import NumpyJSONResponse
from baihua.app.schemas import EmbedRequest, EmbedResponse

router = APIRouter(tags=["embeddings"])


@router.post("/embed", response_model=EmbedResponse, response_class=NumpyJSONResponse)
async def embed(
    body: EmbedRequest, service: ServiceDep, settings: SettingsDep
) -> NumpyJSONResponse:
    """Embed texts; `truncated` flags texts cut at the model's token limit."""
    body.check_limits(settings)
    options = EmbedOptions(body.text_type, body.whiten, body.normalize)
    embedded = await service.batcher.embed(body.texts, options)
    return NumpyJSONResponse(
        {
            "embeddings": embedded.vectors,
            "dim": embedded.vectors.shape[1],
            "truncated": embedded.truncated,
            "model": service.model,
        }
    )
