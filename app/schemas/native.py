"""The native bodies of /embed (which also takes TEI's `inputs`) and /search."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from baihua.app.schemas.common import (
    MAX_TOP_K,
    TEXTS_LIMIT,
    AcceptIntegralFloat,
    Dimensions,
    Loc,
    OneOrMoreTexts,
    PayloadFilter,
    Text,
    TextsRequest,
    exactly_one_of,
    located,
    payload_errors,
)
from baihua.serving.settings import Settings


class EmbedRequest(TextsRequest):
    """Ours (`texts`, answered with an object) or TEI's (`inputs`, answered with the bare list
    of vectors, as TEI does); the options apply to both."""

    model_config = exactly_one_of("texts", "inputs")
    list_field = "texts"
    one_of = ("texts", "inputs")

    texts: (
        SkipJsonSchema[None]
        | Annotated[list[Text], Field(min_length=1, json_schema_extra=TEXTS_LIMIT)]
    ) = Field(None, description="Texts to embed, in order.")
    inputs: SkipJsonSchema[None] | OneOrMoreTexts = Field(
        None, description="TEI's field: one text or a list; the response is TEI's bare list."
    )
    whiten: bool = Field(True, description="Apply the configured whitening transform, if any.")
    normalize: bool = Field(True, description="L2-normalise the vectors (cosine = dot product).")
    text_type: Literal["query", "passage"] = Field(
        "query", description="Selects the model's prefix (e5: 'query: ' or 'passage: ')."
    )
    dimensions: Dimensions | None = None
    truncate: bool | None = Field(
        None,
        description="TEI's flag. false: a text over the token limit is a 422 instead of being "
        "truncated; true or omitted: truncate (and report it in `truncated`).",
    )
    truncation_direction: Literal["right", "Right", "left", "Left"] = Field(
        "right",
        description="TEI's: a long text loses its end (right) or its start (left; the model's "
        "prefix is kept).",
    )

    def located_texts(self) -> list[tuple[Loc, str]]:
        if self.inputs is not None:
            return located("inputs", self.inputs)
        return located("texts", self.texts or [])


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int
    truncated: list[bool] = Field(
        description="Per text: it exceeded the model's token limit and was cut to it."
    )
    model: str


class FusionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["rrf", "weighted"] = Field(
        "rrf",
        description="'rrf': reciprocal-rank fusion, sum of 1 / (k + rank); 'weighted': weight x "
        "dense + (1 - weight) x sparse, each side's scores min-max normalised.",
    )
    # strict: a JSON true or "1" is not a number (integers still are)
    k: float = Field(60, ge=0, strict=True, description="RRF's k.")
    weight: float = Field(
        0.5, ge=0, le=1, strict=True, description="The dense side's weight ('weighted')."
    )


class SearchRequest(TextsRequest):
    model_config = exactly_one_of("query", "queries")
    list_field = "queries"
    one_of = ("query", "queries")

    query: SkipJsonSchema[None] | Text = Field(
        None, description="One query; results is a list of hits."
    )
    queries: (
        SkipJsonSchema[None]
        | Annotated[list[Text], Field(min_length=1, json_schema_extra=TEXTS_LIMIT)]
    ) = Field(None, description="Several queries; results is a list of hit lists.")
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K), AcceptIntegralFloat] = 10
    filter: PayloadFilter | None = Field(
        None,
        description="Only documents whose payload matches, e.g. {'lang': 'zh'} or "
        "{'price': {'$gte': 10}}; operators $eq $ne $in $nin $gt $gte $lt $lte, $and, $or.",
    )
    rerank: Literal["none", "geodesic"] = Field(
        "none",
        description="'geodesic': re-rank the nearest candidates by shortest paths through the "
        "documents' kNN graph (each hit then has `geodesic`, its distance). In hybrid mode it "
        "re-ranks the dense side before the fusion; sparse mode has no dense side.",
    )
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(
        None,
        description="'dense': nearest vectors; 'sparse': BM25 over the documents' words "
        "(jieba for Chinese; codes such as XK-7731 whole and in parts); 'hybrid': both, fused "
        "(see `fusion`). Default: the server's search_mode. Sparse and hybrid need the FAISS "
        "backend.",
    )
    fusion: FusionRequest | None = Field(
        None, description="How 'hybrid' fuses; default: the server's search_fusion."
    )

    def located_texts(self) -> list[tuple[Loc, str]]:
        if self.query is not None:
            return [(("query",), self.query)]
        return located("queries", self.queries or [])

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
            errors.extend(payload_errors(self.filter, ("filter",), settings))
        return errors


class Hit(BaseModel):
    id: int
    score: float = Field(
        description="Cosine similarity to the query (dense), BM25 (sparse), the fused score "
        "(hybrid)."
    )
    text: str
    payload: dict[str, Any]
    geodesic: float | None = Field(
        None, description="Geodesic distance (smaller is nearer) when `rerank` is 'geodesic'."
    )
    dense_rank: int | None = Field(
        None, description="Sparse and hybrid modes: rank (from 1) among the dense candidates."
    )
    dense_score: float | None = Field(None, description="Its cosine similarity there.")
    sparse_rank: int | None = Field(
        None, description="Sparse and hybrid modes: rank (from 1) among the BM25 candidates."
    )
    sparse_score: float | None = Field(None, description="Its BM25 score there.")


class SearchResponse(BaseModel):
    results: list[Hit] | list[list[Hit]] = Field(
        description="Hits, best first: a list for `query`, a list per query for `queries`."
    )
    truncated: bool | list[bool] = Field(description="The query (or each query) was truncated.")
