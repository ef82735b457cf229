"""Dependencies that hand the app's shared resources to routes.

All are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a queue of its own
under load and a thread hop per dependency for what takes microseconds.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from baihua.app.admission import ARRIVED
from baihua.serving.service import Service
from baihua.serving.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_service(request: Request) -> Service:
    """The loaded service, or 503 while the model and index are still loading (or failed to)."""
    service: Service | None = request.app.state.service
    if service is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=request.app.state.not_ready_reason,
            headers={"Retry-After": "5"},
        )
    return service


async def get_client(request: Request) -> str:
    """Who sends this request, for per-client shares of the queue: a digest of its bearer
    token, else its address."""
    authorization = request.headers.get("authorization")
    if authorization:
        return hashlib.sha256(authorization.encode("utf-8", "replace")).hexdigest()[:16]
    return request.client.host if request.client else "unknown"


async def get_arrived(request: Request) -> float | None:
    """When the request reached the app (the event loop's time), which its deadline counts
    from; None on routes the admission gate does not watch."""
    arrived: float | None = request.scope.get(ARRIVED)
    return arrived


SettingsDep = Annotated[Settings, Depends(get_settings)]
ArrivedDep = Annotated[float | None, Depends(get_arrived)]
ServiceDep = Annotated[Service, Depends(get_service)]
ClientDep = Annotated[str, Depends(get_client)]


async def require_json(request: Request) -> None:
    """415 for a body sent as anything but JSON (FastAPI would report it as a 422)."""
    content_type = request.headers.get("content-type")
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    if content_type is None and not has_body:
        return  # no body at all: the validation error says which fields are required
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime != "application/json" and not mime.endswith("+json"):
        sent = f"it was sent as {content_type!r}" if content_type else "it had no Content-Type"
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"the body must be JSON with the header 'Content-Type: application/json'; "
            f"{sent}",
        )


JSON_BODY = [Depends(require_json)]
