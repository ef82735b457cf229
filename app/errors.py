"""Map the library's errors to HTTP statuses; under /v1 errors take OpenAI's shape.

OpenAI clients read `{"error": {"message", "type", "param", "code"}}`; everything else gets
FastAPI's usual `{"detail": ...}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from baihua.app.batcher import EncoderError, EncoderUnavailable
from baihua.index import DuplicateIdError, FilterError

RETRY_AFTER_S = "1"


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def _openai_error(
    status_code: int,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    kind = "invalid_request_error" if status_code < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not _is_openai(request):
        return await request_validation_exception_handler(request, exc)
    errors: list[dict[str, Any]] = list(exc.errors())
    params = [".".join(str(part) for part in error["loc"][1:]) for error in errors]
    message = "; ".join(f"{p}: {e['msg']}" for p, e in zip(params, errors, strict=True))
    return _openai_error(status.HTTP_422_UNPROCESSABLE_CONTENT, message, params[0] or None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if not _is_openai(request):
        return await http_exception_handler(request, exc)
    return _openai_error(exc.status_code, str(exc.detail), headers=exc.headers)


async def _encoder_unavailable(request: Request, exc: Exception) -> Response:
    return await _http_error(
        request,
        HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": RETRY_AFTER_S}
        ),
    )


async def _encoder_error(request: Request, exc: Exception) -> Response:
    return await _http_error(
        request, HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(exc))
    )


async def _duplicate_id(request: Request, exc: Exception) -> Response:
    return await _http_error(request, HTTPException(status.HTTP_409_CONFLICT, str(exc)))


async def _filter_error(request: Request, exc: Exception) -> Response:
    return await _http_error(
        request, HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"filter: {exc}")
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(EncoderUnavailable, _encoder_unavailable)
    app.add_exception_handler(EncoderError, _encoder_error)
    app.add_exception_handler(DuplicateIdError, _duplicate_id)
    app.add_exception_handler(FilterError, _filter_error)
