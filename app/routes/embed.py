from typing import Any

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError

from baihua.app.deps import JSON_BODY, ArrivedDep, ClientDep, ServiceDep, SettingsDep
from baihua.app.openapi import BODY_ERRORS, ENCODING_ERRORS, PROTECTED_ERRORS, error_responses
from baihua.app.responses import NumpyJSONResponse
from baihua.app.schemas.common import check_dimensions
from baihua.app.schemas.native import EmbedRequest, EmbedResponse
from baihua.encoder import Embedded
from baihua.serving.batcher import EmbedOptions

router = APIRouter(tags=["embeddings"])


def check_not_truncated(body: EmbedRequest, embedded: Embedded, max_length: int) -> None:
    """TEI's `truncate: false`: a text over the token limit is an error, not cut."""
    errors = [
        {
            "type": "too_long",
            "loc": ("body", *loc),
            "msg": f"text has {n} tokens; the limit is {max_length} (send truncate: true to cut "
            "it)",
        }
        for (loc, _), cut, n in zip(
            body.located_texts(), embedded.truncated, embedded.n_tokens, strict=True
        )
        if cut
    ]
    if errors:
        raise RequestValidationError(errors)


@router.post(
    "/embed",
    response_model=EmbedResponse | list[list[float]],
    response_class=NumpyJSONResponse,
    dependencies=JSON_BODY,
    responses=error_responses(*PROTECTED_ERRORS, *BODY_ERRORS, *ENCODING_ERRORS),
)
async def embed(
    body: EmbedRequest,
    service: ServiceDep,
    settings: SettingsDep,
    client: ClientDep,
    arrived: ArrivedDep,
) -> NumpyJSONResponse:
    """Embed texts; `truncated` flags texts cut at the model's token limit.

    With TEI's `inputs` instead of `texts`, the answer is TEI's: the bare list of vectors."""
    body.check_limits(settings)
    check_dimensions(body.dimensions, service.pipeline.dim)
    options = EmbedOptions(
        body.text_type,
        body.whiten,
        body.normalize,
        body.dimensions,
        "left" if body.truncation_direction.lower() == "left" else "right",
    )
    with body.naming_rejected_texts():
        embedded = await service.batcher.embed(
            body.texts_to_embed(), options, client=client, arrived=arrived
        )
    if body.truncate is False:
        check_not_truncated(body, embedded, service.pipeline.encoder.max_length)
    if body.inputs is not None:
        return NumpyJSONResponse(embedded.vectors)
    content: dict[str, Any] = {
        "embeddings": embedded.vectors,
        "dim": embedded.vectors.shape[1],
        "truncated": embedded.truncated,
        "model": service.model,
    }
    return NumpyJSONResponse(content)
