"""Map the library's errors to HTTP statuses, with messages in words that name the field.

Under /v1 errors take OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and
OpenAI's statuses (400 for a bad request, 429 when the queue is full), so the official client
raises the exception its users catch; on TEI's own paths (`/`, `/invocations`, `/tokenize`,
`/decode`) they take TEI's, `{"error": "...", "error_type": "Validation"}`, with TEI's statuses
(400 for an empty list, 429 when the queue is full); everything else gets FastAPI's
`{"detail": ...}`, with
422 for a request that is valid JSON but not a valid request, and 400 for a body that is not
JSON at all. Error bodies never echo the input back, and what they quote (locations, messages)
has lone surrogates escaped, so a hostile request cannot turn its own 4xx into a 500.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException

from baihua.app.schemas.common import NOT_BLANK
from baihua.app.schemas.tei import TEI_PATHS
from baihua.core.errors import StorageFullError, StorageUnavailableError
from baihua.index import DuplicateIdError, FilterError, IdsExhaustedError
from baihua.index.errors import preview
from baihua.serving.batcher import (
    ClientOverLimit,
    EncoderError,
    EncoderUnavailable,
    QueueFullError,
    TextRejected,
)
from baihua.serving.documents import NoIdLeftError

# pydantic puts union members' tags into error locations ("str", "constrained-str",
# "list[...]"); no field of the API has "-" or "[" in its name
_TAGS = {"none", "str", "int", "float", "bool"}

# the errors that mean a request conflicts with the stored documents: 409
_CONFLICTS: tuple[type[Exception], ...] = (DuplicateIdError, IdsExhaustedError, NoIdLeftError)

_OPENAI_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_OPENAI_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}

_TEI_TYPES = {429: "Overloaded", 500: "Backend", 503: "Unhealthy"}


def clean_text(text: str) -> str:
    """`text` with lone surrogates written as `\\udXXX`, so it always encodes as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(request_path: str, status_code: int, message: str) -> dict[str, Any]:
    """The JSON body of an error: OpenAI's shape (and type, code) under /v1/, TEI's on TEI's
    paths, FastAPI's elsewhere."""
    message = clean_text(message)
    if request_path in TEI_PATHS:
        return {"error": message, "error_type": _TEI_TYPES.get(status_code, "Validation")}
    if not request_path.startswith("/v1/"):
        return {"detail": message}
    default = "invalid_request_error" if status_code < 500 else "server_error"
    return {
        "error": {
            "message": message,
            "type": _OPENAI_TYPES.get(status_code, default),
            "param": None,
            "code": _OPENAI_CODES.get(status_code),
        }
    }


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def _is_tei(request: Request) -> bool:
    return request.url.path in TEI_PATHS


def _tei_error(
    status_code: int, message: str, error_type: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": clean_text(message), "error_type": error_type}
    return JSONResponse(body, status_code=status_code, headers=headers)


def _clean_loc(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """The location without pydantic's union tags."""
    return tuple(
        part
        for part in loc
        if isinstance(part, int)
        or not ("[" in part or "-" in part or part.startswith("<") or part in _TAGS)
    )


def _field_loc(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """The field: without where it was sent ("body", "query", "path") and without tags."""
    clean = _clean_loc(loc)
    return clean[1:] if clean[:1] in (("body",), ("query",), ("path",)) else clean


def field_path(loc: Sequence[str | int]) -> str:
    """`("body", "documents", 0, "text")` → `documents[0].text`; the whole body is `body`."""
    path = ""
    for part in _field_loc(loc):
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path or "body"


def _plain(error: Mapping[str, Any]) -> str:
    kind, message = error["type"], str(error["msg"])
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NOT_BLANK:
        return "must not be empty or only whitespace"
    if kind == "missing":
        return "is required" if _field_loc(error["loc"]) else "the request needs a JSON body"
    if kind == "string_unicode":  # JSON lets a client send "\ud800", which no encoder takes
        return "has a lone surrogate, which is not valid Unicode"
    if kind == "extra_forbidden":
        return "is not a field of this request (misspelt?)"
    if kind == "json_invalid":
        reason = error.get("ctx", {}).get("error", "")
        return f"the body is not valid JSON: {reason} at character {error['loc'][-1]}"
    return message.removeprefix("Value error, ")


def plain_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`{"type", "loc", "msg"}` per error, `msg` starting with the field; `input` is dropped,
    and so is "should be null" where the same field has a better message."""
    others = [_field_loc(error["loc"]) for error in errors if error["type"] != "none_required"]
    plain = []
    for error in errors:
        loc = _field_loc(error["loc"])
        if error["type"] == "none_required" and any(other[: len(loc)] == loc for other in others):
            continue
        message = _plain(error)
        if error["type"] != "json_invalid":
            message = f"{field_path(error['loc'])}: {message}"
        loc_clean = [clean_text(p) if isinstance(p, str) else p for p in _clean_loc(error["loc"])]
        plain.append({"type": error["type"], "loc": loc_clean, "msg": clean_text(message)})
    return plain


def _openai_error(
    status_code: int,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body("/v1/", status_code, message)
    body["error"]["param"] = param
    return JSONResponse(body, status_code=status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = plain_errors(exc.errors())
    not_json = any(error["type"] == "json_invalid" for error in errors)
    if _is_openai(request):
        first = _field_loc(errors[0]["loc"]) if errors else ()
        param = str(first[0]) if first and not not_json else None
        message = "; ".join(error["msg"] for error in errors)
        return _openai_error(status.HTTP_400_BAD_REQUEST, message, param)
    if _is_tei(request):
        message = "; ".join(error["msg"] for error in errors)
        if any(error["type"] == "too_short" for error in errors):  # TEI: "`inputs` cannot be empty"
            return _tei_error(status.HTTP_400_BAD_REQUEST, message, "Empty")
        code = status.HTTP_400_BAD_REQUEST if not_json else status.HTTP_422_UNPROCESSABLE_CONTENT
        return _tei_error(code, message, "Validation")
    if not_json:
        return JSONResponse({"detail": errors[0]["msg"]}, status.HTTP_400_BAD_REQUEST)
    return JSONResponse({"detail": errors}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def _allowed_methods(request: Request) -> str:
    """Every method of every route on this path; Starlette names only the first route's."""
    path = request.scope["path"]
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.detail, str):
        exc.detail = clean_text(exc.detail)
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        exc.headers = {**(exc.headers or {}), "Allow": _allowed_methods(request)}
    if _is_tei(request):
        kind = _TEI_TYPES.get(exc.status_code, "Validation")
        return _tei_error(exc.status_code, str(exc.detail), kind, headers=exc.headers)
    if not _is_openai(request):
        return await http_exception_handler(request, exc)
    return _openai_error(exc.status_code, str(exc.detail), headers=exc.headers)


async def _encoder_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EncoderUnavailable)
    # OpenAI and TEI clients back off on 429; the others know 503 with Retry-After
    over = isinstance(exc, ClientOverLimit) or (
        isinstance(exc, QueueFullError) and (_is_openai(request) or _is_tei(request))
    )
    code = status.HTTP_429_TOO_MANY_REQUESTS if over else status.HTTP_503_SERVICE_UNAVAILABLE
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


def _conflict_message(exc: Exception) -> str:
    """What a request that conflicts with the stored documents is told: for ids already stored,
    the request field that replaces them (the store's own message names the library call)."""
    if isinstance(exc, DuplicateIdError) and exc.stored:
        return f'ids already stored: {preview(exc.ids)}; send "upsert": true to replace them'
    return str(exc)


async def _conflict(request: Request, exc: Exception) -> Response:
    """An id taken, or none left to assign: 409."""
    message = _conflict_message(exc)
    return await _http_error(request, HTTPException(status.HTTP_409_CONFLICT, message))


async def _filter_error(request: Request, exc: Exception) -> Response:
    """A filter the store cannot read (an unknown operator, ...): 422 in the shape of the
    validation errors, which the schema declares for 422."""
    where = "query" if request.method == "GET" else "body"
    error = {"type": "filter_error", "loc": (where, "filter"), "msg": str(exc)}
    return await _validation_error(request, RequestValidationError([error]))


async def _storage_full(request: Request, exc: Exception) -> Response:
    """The disk holding the data directory is full: 507 Insufficient Storage (the message
    names the directory); writes work again once space is freed."""
    return await _http_error(request, HTTPException(status.HTTP_507_INSUFFICIENT_STORAGE, str(exc)))


async def _storage_unavailable(request: Request, exc: Exception) -> Response:
    """The data directory is read-only or gone: 503; reads keep working."""
    return await _http_error(request, HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(EncoderUnavailable, _encoder_unavailable)
    app.add_exception_handler(EncoderError, _encoder_error)
    app.add_exception_handler(TextRejected, _text_rejected)
    app.add_exception_handler(FilterError, _filter_error)
    app.add_exception_handler(StorageFullError, _storage_full)
    app.add_exception_handler(StorageUnavailableError, _storage_unavailable)
    for conflict in _CONFLICTS:
        app.add_exception_handler(conflict, _conflict)
