"""TEI's routes for an embedding model (text-embeddings-inference, `router/src/http/server.rs`),
so TEI's clients work with only the URL changed.

TEI routes `POST /` and `POST /invocations` to the model's kind, `/embed` for an embedding
model; `GET /` and `GET /ping` are its health check, like `/health`. `/tokenize` and `/decode`
use the served model's tokenizer. `/embed` (TEI's `inputs`), `/health`, `/info` and `/metrics`
live with our own routes. On these paths errors take TEI's shape (app/errors.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from baihua.app.deps import JSON_BODY, ArrivedDep, ClientDep, ServiceDep, SettingsDep
from baihua.app.openapi import BODY_ERRORS, ENCODING_ERRORS, PROTECTED_ERRORS, error_responses
from baihua.app.responses import NumpyJSONResponse
from baihua.app.routes import embed
from baihua.app.schemas.tei import (
    DecodeRequest,
    SimpleToken,
    TeiEmbedRequest,
    TeiError,
    TokenizeRequest,
)
from baihua.encoder.tokenizer import TextTokenizer

router = APIRouter(tags=["tei"])
public = APIRouter(tags=["tei"])

UNHEALTHY: dict[int | str, dict[str, Any]] = {
    503: {"model": TeiError, "description": "Loading, shutting down, or loading failed."}
}


async def tei_health(request: Request) -> Response:
    """TEI's health check: 200 with an empty body once ready, else 503 with TEI's error."""
    state = request.app.state
    if state.service is None or state.draining:
        body = {"error": state.not_ready_summary, "error_type": "Unhealthy"}
        return JSONResponse(body, status.HTTP_503_SERVICE_UNAVAILABLE)
    return Response(status_code=status.HTTP_200_OK)


for path in ("/", "/ping"):
    public.add_api_route(
        path,
        tei_health,
        methods=["GET"],
        response_class=Response,
        responses={200: {"description": "Ready (an empty body).", "content": None}, **UNHEALTHY},
    )


async def tei_embed(
    body: TeiEmbedRequest,
    service: ServiceDep,
    settings: SettingsDep,
    client: ClientDep,
    arrived: ArrivedDep,
) -> NumpyJSONResponse:
    """TEI's embed: the bare list of vectors, one per input (a single string gets a list of
    one). The options of `POST /embed` apply; `prompt_name` is TEI's name for `text_type`."""
    if body.prompt_name is not None:
        body = body.model_copy(update={"text_type": body.prompt_name})
    return await embed.embed(body, service, settings, client, arrived)


for path in ("/", "/invocations"):
    router.add_api_route(
        path,
        tei_embed,
        methods=["POST"],
        response_model=list[list[float]],
        response_class=NumpyJSONResponse,
        dependencies=JSON_BODY,
        responses=error_responses(*PROTECTED_ERRORS, *BODY_ERRORS, *ENCODING_ERRORS, tei=True),
        operation_id=f"tei_embed_{path.strip('/') or 'root'}",
    )


def simple_tokens(
    tokenizer: TextTokenizer, text: str, add_special_tokens: bool
) -> list[SimpleToken]:
    """TEI's tokens of `text`: id, its span of the text with UTF-8 byte offsets, or for a
    special token its own text and no offsets."""
    encoded = tokenizer.encode_one(text, add_special_tokens=add_special_tokens)
    byte_at = [0]
    for char in text:
        byte_at.append(byte_at[-1] + len(char.encode("utf-8")))
    tokens = []
    for id_, (start, stop), special in zip(
        encoded.ids, encoded.offsets, encoded.special_tokens_mask, strict=True
    ):
        if special:
            piece = tokenizer.id_to_token(id_)
            tokens.append(SimpleToken(id=id_, text=piece, special=True, start=None, stop=None))
        else:
            tokens.append(
                SimpleToken(
                    id=id_,
                    text=text[start:stop],
                    special=False,
                    start=byte_at[start],
                    stop=byte_at[stop],
                )
            )
    return tokens


@router.post(
    "/tokenize",
    dependencies=JSON_BODY,
    responses=error_responses(*PROTECTED_ERRORS, *BODY_ERRORS, tei=True),
)
async def tokenize(
    body: TokenizeRequest, service: ServiceDep, settings: SettingsDep
) -> list[list[SimpleToken]]:
    """The served model's tokens of each input, with the prefix `POST /` embeds it with
    (`prompt_name`, default the query prefix); not truncated."""
    body.check_limits(settings)
    encoder = service.pipeline.encoder
    prefix = encoder.prefix(body.prompt_name or "query")

    def run() -> list[list[SimpleToken]]:
        return [
            simple_tokens(encoder.tokenizer, prefix + text, body.add_special_tokens)
            for text in body.texts_to_embed()
        ]

    return await asyncio.to_thread(run)


@router.post(
    "/decode",
    dependencies=JSON_BODY,
    responses=error_responses(*PROTECTED_ERRORS, *BODY_ERRORS, tei=True),
)
async def decode(body: DecodeRequest, service: ServiceDep, settings: SettingsDep) -> list[str]:
    """The text of each list of token ids."""
    nested = bool(body.ids) and isinstance(body.ids[0], list)
    batch = cast(list[list[int]], body.ids) if nested else [cast(list[int], body.ids)]
    if len(batch) > settings.max_texts_per_request:
        message = (
            f"{len(batch)} id lists in one request; the limit is "
            f"{settings.max_texts_per_request} (max_texts_per_request)"
        )
        raise RequestValidationError([{"type": "too_long", "loc": ("body", "ids"), "msg": message}])
    tokenizer = service.pipeline.encoder.tokenizer
    vocabulary = len(tokenizer)
    errors = [
        {
            "type": "less_than",
            "loc": ("body", "ids", *((i,) if nested else ()), j),
            "msg": f"token id {token} is not in the vocabulary (size {vocabulary})",
        }
        for i, ids in enumerate(batch)
        for j, token in enumerate(ids)
        if token >= vocabulary
    ]
    if errors:
        raise RequestValidationError(errors)

    def run() -> list[str]:
        return [
            tokenizer.decode(ids, skip_special_tokens=body.skip_special_tokens) for ids in batch
        ]

    return await asyncio.to_thread(run)
