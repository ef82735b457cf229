from fastapi import APIRouter, Request, Response, status

from baihua.app.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: the process serves requests."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Health, "description": "Still loading."}})
async def readyz(request: Request, response: Response) -> Health:
    """Readiness: 200 once the model and index are loaded, 503 (with the reason) before."""
    if request.app.state.service is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status=request.app.state.not_ready_reason)
    return Health(status="ready")
