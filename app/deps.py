"""Dependencies that hand the app's shared resources to routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from baihua.app.service import Service
from baihua.app.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_service(request: Request) -> Service:
    """The loaded service, or 503 while the model and index are still loading (or failed to)."""
    service: Service | None = request.app.state.service
    if service is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=request.app.state.not_ready_reason,
            headers={"Retry-After": "5"},
        )
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[Service, Depends(get_service)]
