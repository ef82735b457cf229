"""OpenAI's bodies for /v1/embeddings, /v1/models and its error shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from baihua.app.schemas.common import (
    Dimensions,
    Loc,
    OneOrMoreTexts,
    TextsRequest,
    located,
)


class OpenAIEmbeddingRequest(TextsRequest):
    """OpenAI's `POST /v1/embeddings` body; any `model` is accepted and answered by ours.

    Unknown fields are ignored, as OpenAI, TEI and infinity do. `input_type` is our extension
    (NVIDIA's and Voyage's name): `passage` (or `document`) embeds with the passage prefix.
    """

    model_config = ConfigDict(extra="ignore")
    list_field = "input"

    input: OneOrMoreTexts
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | None = None
    user: str | None = None
    input_type: Literal["query", "passage", "document"] = Field(
        "query", description="Not in OpenAI's API: `passage`/`document` for texts to index."
    )

    @field_validator("input", mode="before")
    @classmethod
    def _strings_only(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not isinstance(value[0], str):
            raise ValueError("only strings are supported; token-id arrays are not")
        return value

    @property
    def text_type(self) -> Literal["query", "passage"]:
        return "query" if self.input_type == "query" else "passage"

    def located_texts(self) -> list[tuple[Loc, str]]:
        return located("input", self.input)


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


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "baihua"


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError
