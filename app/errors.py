"""Map the library's errors to HTTP statuses; under /v1 errors take OpenAI's shape.

OpenAI clients read `{"error": {"message", "type", "param", "code"}}`; everything else gets
FastAPI's usual `{"detail": ...}`. Error bodies never echo what cannot be valid JSON (lone
surrogates, NaN) or more than a short excerpt of the input, so a hostile request cannot turn its
own 4xx into a 500 or a large response.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from baihua.app.batcher import ClientOverLimit, EncoderError, EncoderUnavailable, TextRejected
from baihua.index import DuplicateIdError, FilterError, IdsExhaustedError

MAX_ECHOED_CHARS = 200  # of a rejected input, in a 422


def clean_text(text: str) -> str:
    """`text` with lone surrogates written as `\\udXXX`, so it always encodes as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(request_path: str, status_code: int, message: str) -> dict[str, Any]:
    """The JSON body of an error: OpenAI's shape under /v1/, FastAPI's elsewhere."""
    message = clean_text(message)
    if not request_path.startswith("/v1/"):
        return {"detail": message}
    kind = "invalid_request_error" if status_code < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def _openai_error(
    status_code: int,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body("/v1/", status_code, message)
    body["error"]["param"] = param
    return JSONResponse(body, status_code=status_code, headers=headers)


def _echoable(value: Any) -> bool:
    """A scalar input short and clean enough to repeat in the error."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return len(value) <= MAX_ECHOED_CHARS and clean_text(value) == value
    return value is None or isinstance(value, bool | int)


def _safe_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        safe = {
            "type": error["type"],
            "loc": [clean_text(p) if isinstance(p, str) else p for p in error["loc"]],
            "msg": clean_text(str(error["msg"])),
        }
        if "input" in error and _echoable(error["input"]):
            safe["input"] = error["input"]
        if "ctx" in error:
            safe["ctx"] = {k: clean_text(str(v)) for k, v in error["ctx"].items()}
        errors.append(safe)
    return errors


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _safe_errors(exc)
    if not _is_openai(request):
        return JSONResponse(jsonable_encoder({"detail": errors}), status_code=422)
    params = [".".join(str(part) for part in error["loc"][1:]) for error in errors]
    message = "; ".join(f"{p}: {e['msg']}" for p, e in zip(params, errors, strict=True))
    return _openai_error(status.HTTP_422_UNPROCESSABLE_CONTENT, message, params[0] or None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.detail, str):
        exc.detail = clean_text(exc.detail)
    if not _is_openai(request):
        return await http_exception_handler(request, exc)
    return _openai_error(exc.status_code, str(exc.detail), headers=exc.headers)


async def _encoder_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EncoderUnavailable)
    code = (
        status.HTTP_429_TOO_MANY_REQUESTS
        if isinstance(exc, ClientOverLimit)
        else status.HTTP_503_SERVICE_UNAVAILABLE
    )
    headers = {"Retry-After": str(exc.retry_after_s)}
    return await _http_error(request, HTTPException(code, str(exc), headers=headers))


async def _encoder_error(request: Request, exc: Exception) -> Response:
    return await _http_error(
        request, HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(exc))
    )


async def _text_rejected(request: Request, exc: Exception) -> Response:
    """Routes name the rejected texts by their place in the body (`located`); this is the rest."""
    return await _http_error(
        request, HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))
    )


async def _duplicate_id(request: Request, exc: Exception) -> Response:
    """An id taken, or none left to assign: a conflict with what is stored."""
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
    app.add_exception_handler(TextRejected, _text_rejected)
    app.add_exception_handler(DuplicateIdError, _duplicate_id)
    app.add_exception_handler(FilterError, _filter_error)
    app.add_exception_handler(IdsExhaustedError, _duplicate_id)
