"""The OpenAPI document as the running server enforces it.

Routes declare every error status they can answer (`error_responses`); settings-dependent limits
are `x-limit` markers in the schemas (app/schemas.py), replaced here by this server's values;
the bearer scheme is listed only when an API key is set. The document is rebuilt until the model
is loaded, since the allowed `dimensions` and token ids come from it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from baihua.app.filter_schema import FILTER_SCHEMA
from baihua.app.json_limits import PAYLOAD_SCHEMAS
from baihua.app.schemas.common import ErrorBody
from baihua.app.schemas.openai import OpenAIErrorBody
from baihua.app.schemas.tei import TEI_PATHS, TeiError

DESCRIPTIONS = {
    400: "The body is not valid JSON (under /v1: any invalid request, as OpenAI answers).",
    401: "Missing or wrong API key (only when the server has one).",
    404: "No such resource.",
    409: 'An id is already stored and `"upsert"` is not true.',
    413: "The body is larger than the server accepts (`max_request_bytes`).",
    415: "The body is not sent as `Content-Type: application/json`.",
    429: "This client has more texts queued than its share (`max_queued_texts_per_client`), or "
    "under /v1 the encoder queue is full; retry after `Retry-After` seconds.",
    500: "The encoder failed on this request's batch.",
    503: "The model is loading (or failed to load), the server is shutting down, the encoder "
    "queue is full or the request waited its whole deadline; see `Retry-After`. For a write: "
    "the data directory is read-only or gone (reads keep working).",
    507: "The disk of the data directory is full: nothing of this write was stored; retry once "
    "space is freed.",
}
BODY_ERRORS = (400, 413, 415, 500)
PROTECTED_ERRORS = (401, 503)
ENCODING_ERRORS = (429,)  # routes whose texts queue for the encoder
WRITE_ERRORS = (507,)  # routes that write to the data directory


def error_responses(
    *codes: int, openai: bool = False, tei: bool = False
) -> dict[int | str, dict[str, Any]]:
    model = OpenAIErrorBody if openai else TeiError if tei else ErrorBody
    return {code: {"model": model, "description": DESCRIPTIONS[code]} for code in codes}


def _resolve_limits(node: Any, limits: dict[str, int | None]) -> None:
    if isinstance(node, dict):
        marker = node.pop("x-limit", None)
        for keyword, name in (marker or {}).items():
            if limits.get(name) is not None:
                node[keyword] = limits[name]
        for value in node.values():
            _resolve_limits(value, limits)
    elif isinstance(node, list):
        for value in node:
            _resolve_limits(value, limits)


SHARED_SCHEMAS = {"Filter": FILTER_SCHEMA, **PAYLOAD_SCHEMAS}


def _resolve_refs(node: Any) -> None:
    """Fields marked `x-ref` (a payload filter, a payload) become references to the schema of
    that name, which pydantic cannot write (recursive, with bounds the server checks)."""
    if isinstance(node, dict):
        name = node.pop("x-ref", None)
        if name is not None:
            for key in ("type", "additionalProperties"):
                node.pop(key, None)
            node["$ref"] = f"#/components/schemas/{name}"
        for value in node.values():
            _resolve_refs(value)
    elif isinstance(node, list):
        for value in node:
            _resolve_refs(value)


def _drop_security(schema: dict[str, Any]) -> None:
    schema.get("components", {}).pop("securitySchemes", None)
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
            operation.get("responses", {}).pop("401", None)


def _openai_statuses(schema: dict[str, Any]) -> None:
    """/v1 answers invalid requests with 400 (declared by the routes), never FastAPI's 422."""
    for path, operations in schema["paths"].items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)


def _tei_statuses(schema: dict[str, Any], paths: frozenset[str]) -> None:
    """TEI's paths answer invalid requests in TEI's error shape, not FastAPI's."""
    tei_error = {"$ref": "#/components/schemas/TeiError"}
    for path in paths:
        for operation in schema["paths"].get(path, {}).values():
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None:
                invalid["content"] = {"application/json": {"schema": tei_error}}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        settings, service = app.state.settings, app.state.service
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        limits = {
            "max_chars_per_text": settings.max_chars_per_text,
            "max_texts_per_request": settings.max_texts_per_request,
            "dim": service.pipeline.dim if service is not None else None,
            "max_token_id": (
                len(service.pipeline.encoder.tokenizer) - 1 if service is not None else None
            ),
        }
        _resolve_limits(schema, limits)
        _resolve_refs(schema)
        schema["components"]["schemas"].update(SHARED_SCHEMAS)
        if settings.api_key is None:
            _drop_security(schema)
        _openai_statuses(schema)
        _tei_statuses(schema, TEI_PATHS)
        if service is not None:
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
