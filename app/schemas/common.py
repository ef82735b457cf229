"""What every dialect's request and response bodies share (native, TEI, OpenAI).

Requests are strict (no type coercion) and reject unknown fields, so a typo such as `"top-k"`
is a 422 naming the field instead of a silently ignored option (OpenAI's `/v1` requests ignore
them, as OpenAI does). Limits that depend on the settings (texts per request, characters per
text, output dimensions) are checked by `TextsRequest.check_limits`, which reports them in the
same 422 shape as pydantic's own errors; in the schema they are `x-limit` markers that
app/openapi.py replaces with the running server's values, so the OpenAPI document states them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from baihua.app.filter_schema import check_filter_scope
from baihua.app.json_limits import json_error, json_size
from baihua.serving.batcher import TextRejected
from baihua.serving.documents import DocumentIndex
from baihua.serving.settings import Settings

MAX_TOP_K = 1000
# The store takes int64 ids; the API stops at 2**53 - 1, the largest integer every JSON client
# (JavaScript's numbers, JSON Schema validators reading floats) keeps exact.
MAX_ID = DocumentIndex.max_id
# A text needs one character that is not whitespace (Python's str.isspace), spelt out because
# regex engines disagree on what \s covers (Python's includes \x1c-\x1f, Rust's does not).
NOT_BLANK = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

Loc = tuple[str | int, ...]


def _integral_float(value: Any) -> Any:
    """JSON Schema counts 4.0 as an integer; strict pydantic would not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


AcceptIntegralFloat = BeforeValidator(_integral_float)  # last in Annotated, after constraints

Text = Annotated[
    str,
    Field(
        pattern=NOT_BLANK,
        description="Not empty or only whitespace.",
        json_schema_extra={"x-limit": {"maxLength": "max_chars_per_text"}},
    ),
]
TEXTS_LIMIT: dict[str, Any] = {"x-limit": {"maxItems": "max_texts_per_request"}}
DocumentId = Annotated[int, Field(ge=0, le=MAX_ID), AcceptIntegralFloat]
Dimensions = Annotated[
    int,
    Field(
        ge=1,
        description="Keep the first `dimensions` components (at most `/info`'s `dim`), then "
        "normalise: with whitening these are exactly a `dimensions`-component fit.",
        json_schema_extra={"x-limit": {"maximum": "dim"}},
    ),
    AcceptIntegralFloat,
]


def _scoped_filter(filter: dict[str, Any]) -> dict[str, Any]:
    check_filter_scope(filter, where="")
    return filter


# A payload filter and a payload: their schemas (app/filter_schema.py, app/json_limits.py) are
# put in place of these `x-ref` markers by app/openapi.py.
PayloadFilter = Annotated[
    dict[str, Any], AfterValidator(_scoped_filter), Field(json_schema_extra={"x-ref": "Filter"})
]
Payload = Annotated[dict[str, Any], Field(json_schema_extra={"x-ref": "Payload"})]


def _some_filter(filter: dict[str, Any]) -> dict[str, Any]:
    if not filter:
        raise ValueError("must not be empty: {} matches every document")
    return filter


NonEmptyFilter = Annotated[
    PayloadFilter,
    AfterValidator(_some_filter),
    Field(json_schema_extra={"x-ref": "Filter", "minProperties": 1}),
]


def _one_or_many(value: Any) -> str | None:
    if isinstance(value, str):
        return "<text>"
    return "<list>" if isinstance(value, list) else None


# One text or a list of them (TEI's `inputs`, OpenAI's `input`); tags start with "<" so error
# locations can drop them (app/errors.py).
OneOrMoreTexts = Annotated[
    Annotated[Text, Tag("<text>")]
    | Annotated[list[Text], Tag("<list>"), Field(min_length=1, json_schema_extra=TEXTS_LIMIT)],
    Discriminator(
        _one_or_many,
        custom_error_type="one_or_many",
        custom_error_message="must be a string or a list of strings",
    ),
]


class RequestModel(BaseModel):
    """`one_of` names fields of which exactly one must be given (and none as an explicit null);
    `exactly_one_of` puts the same rule into the schema."""

    # python-re: the same regular expressions as the OpenAPI clients that test against `pattern`
    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")
    one_of: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if not cls.one_of or not isinstance(data, dict):
            return data
        for name in cls.one_of:
            if name in data and data[name] is None:
                raise ValueError(f"`{name}` must not be null; leave it out instead")
        given = [name for name in cls.one_of if name in data]
        if len(given) != 1:
            names = " or ".join(f"`{name}`" for name in cls.one_of)
            raise ValueError(f"give exactly one of {names}")
        return data


class TextsRequest(RequestModel):
    """A request carrying texts to embed, each with its location in the body for errors."""

    list_field: ClassVar[str]

    def located_texts(self) -> list[tuple[Loc, str]]:
        raise NotImplementedError

    def texts_to_embed(self) -> list[str]:
        return [text for _, text in self.located_texts()]

    def check_limits(self, settings: Settings) -> None:
        """422 when the request exceeds max_texts_per_request or max_chars_per_text."""
        located = self.located_texts()
        errors: list[dict[str, Any]] = []
        if len(located) > settings.max_texts_per_request:
            errors.append(
                {
                    "type": "too_long",
                    "loc": ("body", self.list_field),
                    "msg": f"{len(located)} texts in one request; the limit is "
                    f"{settings.max_texts_per_request} (max_texts_per_request)",
                }
            )
        for loc, text in located:
            if len(text) > settings.max_chars_per_text:
                errors.append(
                    {
                        "type": "string_too_long",
                        "loc": ("body", *loc),
                        "msg": f"text has {len(text)} characters; the limit is "
                        f"{settings.max_chars_per_text} (max_chars_per_text)",
                    }
                )
        errors.extend(self.extra_limit_errors(settings))
        if errors:
            raise RequestValidationError(errors)

    def extra_limit_errors(self, settings: Settings) -> list[dict[str, Any]]:
        """Limits of one request type, in pydantic's error shape."""
        return []

    @contextlib.contextmanager
    def naming_rejected_texts(self) -> Iterator[None]:
        """Turn the encoder's TextRejected into a 422 naming each text by its place in the body."""
        try:
            yield
        except TextRejected as err:
            located = self.located_texts()
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("body", *located[position][0]),
                        "msg": f"the model cannot take this text ({err.reason})",
                    }
                    for position in err.positions
                ]
            ) from None


def payload_errors(value: Any, loc: Loc, settings: Settings) -> list[dict[str, Any]]:
    """Payload or filter checks (valid Unicode, finite numbers, depth, size) as 422 errors."""
    found = json_error(value, loc, max_depth=settings.max_payload_depth)
    if found is not None:
        return [{"type": "value_error", "loc": ("body", *found[0]), "msg": found[1]}]
    size = json_size(value)
    if size > settings.max_payload_bytes:
        message = (
            f"{size} bytes as JSON; the limit is {settings.max_payload_bytes} (max_payload_bytes)"
        )
        return [{"type": "too_long", "loc": ("body", *loc), "msg": message}]
    return []


def check_dimensions(dimensions: int | None, dim: int) -> None:
    """422 when `dimensions` exceeds the served dimension (the schema's maximum says so too)."""
    if dimensions is not None and dimensions > dim:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("body", "dimensions"),
                    "msg": f"this server's vectors have {dim} dimensions; send at most {dim}",
                }
            ]
        )


def exactly_one_of(*names: str) -> ConfigDict:
    """The schema half of `TextsRequest.one_of`."""
    return ConfigDict(json_schema_extra={"oneOf": [{"required": [name]} for name in names]})


def located(field: str, texts: str | list[str]) -> list[tuple[Loc, str]]:
    if isinstance(texts, str):
        return [((field,), texts)]
    return [((field, i), text) for i, text in enumerate(texts)]


class Health(BaseModel):
    status: str


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, in words.")


class TransformInfo(BaseModel):
    method: Literal["whitening", "flow"]
    n_components: int = Field(description="Dimensions the transform outputs.")
    beta: float | None = Field(None, description="Whitening only: fraction of the mean removed.")
    gamma: float | None = Field(None, description="Whitening only: variance equalisation.")


class Info(BaseModel):
    model: str
    pooling: str
    dim: int = Field(description="Dimension of the vectors returned by default (whitened).")
    encoder_dim: int = Field(description="Dimension of the raw vectors (`whiten: false`).")
    max_length: int = Field(description="Token limit per text; longer texts are truncated.")
    query_prefix: str
    passage_prefix: str
    whitening: TransformInfo | None = Field(description="The fitted transform, if any.")
    backend: str
    dtype: str
    device: str
    version: str = Field(description="baihua's version.")
    model_id: str = Field(description="TEI's name for `model`.")
    max_input_length: int = Field(description="TEI's name for `max_length`.")
    max_client_batch_size: int = Field(description="Most texts one request may carry.")
