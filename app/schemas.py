"""Request and response bodies of the HTTP API.

Requests are strict (no type coercion) and reject unknown fields, so a typo such as `"top-k"`
is a 422 naming the field instead of a silently ignored option. Limits that depend on the settings
(texts per request, characters per text) are checked by `TextsRequest.check_limits`, which
reports them in the same 422 shape as pydantic's own errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from baihua.app.batcher import TextRejected
from baihua.app.json_limits import json_error, json_size, lone_surrogate
from baihua.app.settings import Settings

MAX_TOP_K = 1000
MAX_ID = 2**63 - 1  # FAISS ids are int64; -1 is its "no result" marker

Loc = tuple[str | int, ...]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text must not be empty or only whitespace")
    position = lone_surrogate(text)
    if position is not None:
        raise ValueError(
            f"text has a lone surrogate at character {position}, which is not valid Unicode"
        )
    return text


Text = Annotated[str, AfterValidator(_not_blank)]
DocumentId = Annotated[int, Field(ge=0, le=MAX_ID)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


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


def _json_errors(value: Any, loc: Loc, settings: Settings) -> list[dict[str, Any]]:
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


class EmbedRequest(TextsRequest):
    list_field = "texts"

    texts: list[Text] = Field(min_length=1, description="Texts to embed, in order.")
    whiten: bool = Field(True, description="Apply the configured whitening transform, if any.")
    normalize: bool = Field(True, description="L2-normalise the vectors (cosine = dot product).")
    text_type: Literal["query", "passage"] = Field(
        "query", description="Selects the model's prefix (e5: 'query: ' or 'passage: ')."
    )

    def located_texts(self) -> list[tuple[Loc, str]]:
        return [(("texts", i), text) for i, text in enumerate(self.texts)]


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int
    truncated: list[bool] = Field(
        description="Per text: it exceeded the model's token limit and was cut to it."
    )
    model: str


class SearchRequest(TextsRequest):
    list_field = "queries"

    query: Text | None = Field(None, description="One query; results is a list of hits.")
    queries: list[Text] | None = Field(
        None, min_length=1, description="Several queries; results is a list of hit lists."
    )
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)
    filter: dict[str, Any] | None = Field(
        None,
        description="Only documents whose payload matches, e.g. {'lang': 'zh'} or "
        "{'price': {'$gte': 10}}; operators $eq $ne $in $nin $gt $gte $lt $lte, $and, $or.",
    )
    rerank: Literal["none", "geodesic"] = Field(
        "none",
        description="'geodesic': re-rank the nearest candidates by shortest paths through the "
        "documents' kNN graph (each hit then has `geodesic`, its distance).",
    )

    @model_validator(mode="after")
    def _exactly_one_query(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of `query` (a string) or `queries` (a list)")
        return self

    def located_texts(self) -> list[tuple[Loc, str]]:
        if self.query is not None:
            return [(("query",), self.query)]
        return [(("queries", i), query) for i, query in enumerate(self.queries or [])]

    def extra_limit_errors(self, settings: Settings) -> list[dict[str, Any]]:
        errors = []
        n_hits = len(self.located_texts()) * self.top_k
        if n_hits > settings.max_search_hits:
            message = (
                f"{n_hits} hits asked for (queries x top_k); the limit is "
                f"{settings.max_search_hits} (max_search_hits)"
            )
            errors.append({"type": "too_long", "loc": ("body", "top_k"), "msg": message})
        if self.filter is not None:
            errors.extend(_json_errors(self.filter, ("filter",), settings))
        return errors


class Hit(BaseModel):
    id: int
    score: float = Field(description="Cosine similarity to the query.")
    text: str
    payload: dict[str, Any]
    geodesic: float | None = Field(
        None, description="Geodesic distance (smaller is nearer) when `rerank` is 'geodesic'."
    )


class SearchResponse(BaseModel):
    results: list[Hit] | list[list[Hit]] = Field(
        description="Hits, best first: a list for `query`, a list per query for `queries`."
    )
    truncated: bool | list[bool] = Field(description="The query (or each query) was truncated.")


class DocumentIn(RequestModel):
    id: DocumentId | None = Field(None, description="Chosen by the caller, or assigned if omitted.")
    text: Text
    payload: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(TextsRequest):
    list_field = "documents"

    documents: list[DocumentIn] = Field(min_length=1)
    upsert: bool = Field(False, description="Replace documents whose id exists instead of 409.")

    @field_validator("documents")
    @classmethod
    def _unique_ids(cls, documents: list[DocumentIn]) -> list[DocumentIn]:
        ids = [doc.id for doc in documents if doc.id is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("document ids must be unique within one request")
        return documents

    def located_texts(self) -> list[tuple[Loc, str]]:
        return [(("documents", i, "text"), doc.text) for i, doc in enumerate(self.documents)]

    def extra_limit_errors(self, settings: Settings) -> list[dict[str, Any]]:
        errors = []
        for i, doc in enumerate(self.documents):
            errors.extend(_json_errors(doc.payload, ("documents", i, "payload"), settings))
        return errors


class DocumentsResponse(BaseModel):
    ids: list[int] = Field(description="The documents' ids, in request order.")
    truncated: list[bool]


class Document(BaseModel):
    id: int
    text: str
    payload: dict[str, Any]


class Deleted(BaseModel):
    id: int
    deleted: bool = True


class OpenAIEmbeddingRequest(TextsRequest):
    """OpenAI's `POST /v1/embeddings` body; any `model` is accepted and answered by ours."""

    list_field = "input"

    input: Text | list[Text]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _strings_only(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not isinstance(value[0], str):
            raise ValueError("only strings are supported; token-id arrays are not")
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        return value

    def check_dimensions(self, dim: int) -> None:
        """422 unless `dimensions` is omitted or equals the served model's output dimension."""
        if self.dimensions is not None and self.dimensions != dim:
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("body", "dimensions"),
                        "msg": f"this server returns {dim} dimensions; omit `dimensions` or "
                        f"send {dim}",
                    }
                ]
            )

    def located_texts(self) -> list[tuple[Loc, str]]:
        if isinstance(self.input, str):
            return [(("input",), self.input)]
        return [(("input", i), text) for i, text in enumerate(self.input)]


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage
    truncated: list[bool] = Field(description="Not in OpenAI's API: inputs cut at the limit.")


class Health(BaseModel):
    status: str


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
