from typing import Any

from fastapi import APIRouter, Request, Response, status

from baihua.app.schemas.common import Health
from baihua.app.security import has_api_key

router = APIRouter(tags=["health"])

NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "Still loading, or loading failed."}
}


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: the process serves requests."""
    return Health(status="ok")


def _readiness(request: Request, response: Response) -> Health:
    """503 (with the reason) while loading or shutting down; the detailed reason (it may name
    files) needs the API key, if one is set."""
    state = request.app.state
    if state.service is None or state.draining:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        detailed = has_api_key(request)
        return Health(status=state.not_ready_reason if detailed else state.not_ready_summary)
    return Health(status="ready")


@router.get("/readyz", responses=NOT_READY)
async def readyz(request: Request, response: Response) -> Health:
    """Readiness: 200 once the model and index are loaded, 503 (with the reason) before and
    while shutting down."""
    return _readiness(request, response)


@router.get("/health", responses=NOT_READY)
async def health(request: Request, response: Response) -> Health:
    """TEI's health check: the same answer as `/readyz`."""
    return _readiness(request, response)
