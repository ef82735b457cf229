"""Optional API key: with `api_key` set, protected routes need `Authorization: Bearer <key>`.

Unprotected on purpose: /healthz and /readyz (orchestrators probe them without secrets) and
/docs, /openapi.json (the schema is not secret, and a browser cannot send the header to load it;
the docs page's "Authorize" button then sends the key with each tried request).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="The server's api_key, when one is set.")


def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    expected: str | None = request.app.state.settings.api_key
    if expected is None:
        return
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), expected.encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
