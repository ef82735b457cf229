from typing import Any

from fastapi import APIRouter, Request, Response, status

from baihua.app.schemas import Health

router = APIRouter(tags=["health"])

NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "Still loading, or loading failed."}
}


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: the process serves requests."""
    return Health(status="ok")


def _readiness(request: Request, response: Response) -> Health:
    if request.app.state.service is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status=request.app.state.not_ready_reason)
    return Health(status="ready")


@router.get("/readyz", responses=NOT_READY)
async def readyz(request: Request, response: Response) -> Health:
    """Readiness: 200 once the model and index are loaded, 503 (with the reason) before."""
    return _readiness(request, response)


@router.get("/health", responses=NOT_READY)
async def health(request: Request, response: Response) -> Health:
    """TEI's health check: the same answer as `/readyz`."""
    return _readiness(request, response)
