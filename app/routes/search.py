import asyncio

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from baihua.app.deps import JSON_BODY, ArrivedDep, ClientDep, ServiceDep, SettingsDep
from baihua.app.openapi import BODY_ERRORS, ENCODING_ERRORS, PROTECTED_ERRORS, error_responses
from baihua.app.responses import ResponseTooLarge, search_body
from baihua.app.schemas.native import FusionRequest, SearchRequest, SearchResponse
from baihua.index.fusion import Fusion
from baihua.serving.documents import RerankUnavailable

router = APIRouter(tags=["search"])


@router.post(
    "/search",
    response_model=SearchResponse,
    dependencies=JSON_BODY,
    responses=error_responses(*PROTECTED_ERRORS, *BODY_ERRORS, *ENCODING_ERRORS),
)
async def search(
    body: SearchRequest,
    service: ServiceDep,
    settings: SettingsDep,
    client: ClientDep,
    arrived: ArrivedDep,
) -> Response:
    """The `top_k` documents nearest to the query (or to each of `queries`), best first."""
    body.check_limits(settings)
    documents = service.documents
    # a re-rank asks for dense results; without a BM25 index only dense exists
    default = settings.search_mode if documents.sparse is not None else "dense"
    mode = body.mode or ("dense" if body.rerank != "none" else default)
    if mode != "dense" and documents.sparse is None:
        raise _invalid(
            "mode",
            f'"mode": "{mode}" needs the BM25 index, which the {settings.index_backend} index '
            'backend does not have; use "mode": "dense"',
        )
    fusion = body.fusion or FusionRequest.model_validate({"method": settings.search_fusion})
    try:
        with body.naming_rejected_texts():
            found = await documents.search(
                body.texts_to_embed(),
                body.top_k,
                body.filter,
                rerank=body.rerank,
                mode=mode,
                fusion=Fusion(fusion.method, k=fusion.k, weight=fusion.weight),
                client=client,
                arrived=arrived,
            )
    except RerankUnavailable as err:
        raise _invalid("rerank", str(err)) from None
    try:
        content = await asyncio.to_thread(
            search_body,
            found.hits,
            found.truncated,
            single=body.query is not None,
            max_bytes=settings.max_response_bytes,
        )
    except ResponseTooLarge as err:
        raise RequestValidationError(
            [{"type": "too_long", "loc": ("body", "top_k"), "msg": str(err)}]
        ) from None
    return Response(content, media_type="application/json")


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message}])
