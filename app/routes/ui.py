"""The search playground: plain HTML, CSS and JavaScript shipped in the package, served at /ui/.

No build step and nothing fetched from elsewhere, so it works on offline deployments; the
Content-Security-Policy holds the page to this server. The page itself is public (it holds no
secrets); the API calls it makes send the key the user types.
"""

from __future__ import annotations

import functools
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import RedirectResponse

MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@functools.cache
def asset(name: str) -> bytes:
    return (files("baihua.app") / "ui" / name).read_bytes()


@router.get("/ui")
async def ui_redirect() -> RedirectResponse:
    """To /ui/, so the page's relative links resolve inside it."""
    return RedirectResponse("ui/", status_code=status.HTTP_308_PERMANENT_REDIRECT)


@router.get("/ui/")
async def ui_page() -> Response:
    return ui_file("index.html")


@router.get("/ui/{name}")
async def ui_asset(name: str) -> Response:
    return ui_file(name)


def ui_file(name: str) -> Response:
    if name not in MEDIA_TYPES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no file {name} in the playground")
    return Response(asset(name), media_type=MEDIA_TYPES[name], headers=HEADERS)
