from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from baihua.app.openapi import error_responses

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses=error_responses(401))
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this app."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
