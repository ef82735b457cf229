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


def _key_matches(request: Request, given: str | None) -> bool:
    expected: str | None = request.app.state.settings.api_key
    if expected is None:
        return True
    return given is not None and secrets.compare_digest(
        given.encode("utf-8", "replace"), expected.encode()
    )


def has_api_key(request: Request) -> bool:
    """Whether the request carries the server's key (always true when none is set)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return _key_matches(request, token if scheme.lower() == "bearer" else None)


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    if not _key_matches(request, None if credentials is None else credentials.credentials):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
