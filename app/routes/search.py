from fastapi import APIRouter

from baihua.app.deps import JSON_BODY, ServiceDep, SettingsDep
from baihua.app.openapi import BODY_ERRORS, PROTECTED_ERRORS, error_responses
from baihua.app.schemas import SearchRequest, SearchResponse

router = APIRouter(tags=["search"])


@router.post(
    "/search", dependencies=JSON_BODY, responses=error_responses(*PROTECTED_ERRORS, *BODY_ERRORS)
)
async def search(body: SearchRequest, service: ServiceDep, settings: SettingsDep) -> SearchResponse:
    """The `top_k` documents nearest to the query (or to each of `queries`), best first."""
    body.check_limits(settings)
    found = await service.documents.search(
        body.texts_to_embed(), body.top_k, body.filter, rerank=body.rerank
    )
    if body.query is not None:
        return SearchResponse.model_validate(
            {"results": found.hits[0], "truncated": found.truncated[0]}, from_attributes=True
        )
    return SearchResponse.model_validate(
        {"results": found.hits, "truncated": found.truncated}, from_attributes=True
    )
