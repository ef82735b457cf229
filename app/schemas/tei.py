"""TEI's bodies (text-embeddings-inference, `router/src/http/types.rs`) for app/routes/tei.py:
the root route's embed request, `/tokenize`, `/decode` and TEI's error."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from baihua.app.schemas.common import (
    TEXTS_LIMIT,
    AcceptIntegralFloat,
    Loc,
    OneOrMoreTexts,
    RequestModel,
    TextsRequest,
)
from baihua.app.schemas.native import EmbedRequest

# Where errors take TEI's shape (app/errors.py) and the schema says so (app/openapi.py).
TEI_PATHS = frozenset({"/", "/invocations", "/tokenize", "/decode"})

# below the served tokenizer's vocabulary size (app/openapi.py states it as the maximum)
TokenId = Annotated[
    int,
    Field(ge=0, json_schema_extra={"x-limit": {"maximum": "max_token_id"}}),
    AcceptIntegralFloat,
]

# TEI's `prompt_name` is a key of the model's prompts; ours are the two e5 prefixes.
PromptName = Literal["query", "passage"]


class TeiEmbedRequest(EmbedRequest):
    """TEI's `POST /` (and `/invocations`): `inputs` (one text or a list) answered with the bare
    list of vectors. `prompt_name` chooses the prefix as `text_type` does."""

    model_config = ConfigDict(json_schema_extra=None)

    inputs: OneOrMoreTexts = Field(description="One text or a list of texts.")
    texts: SkipJsonSchema[None] = Field(None, exclude=True)
    prompt_name: PromptName | None = Field(
        None, description="TEI's name for `text_type`: the prefix the texts get."
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _not_ours(cls, value: object) -> None:
        raise ValueError("not a field of TEI's request; send `inputs`")


class TokenizeRequest(TextsRequest):
    list_field = "inputs"

    inputs: OneOrMoreTexts = Field(description="One text or a list of texts.")
    add_special_tokens: bool = True
    prompt_name: PromptName | None = Field(
        None,
        description="The prefix tokenized with each text; the query prefix unless told, as "
        "`POST /` embeds.",
    )

    def located_texts(self) -> list[tuple[Loc, str]]:
        if isinstance(self.inputs, str):
            return [(("inputs",), self.inputs)]
        return [(("inputs", i), text) for i, text in enumerate(self.inputs)]


class SimpleToken(BaseModel):
    id: int
    text: str = Field(description="The token's span of the input (the token itself if special).")
    special: bool
    start: int | None = Field(description="UTF-8 byte offset in the input; null if special.")
    stop: int | None = Field(description="UTF-8 byte offset in the input; null if special.")


class DecodeRequest(RequestModel):
    ids: (
        list[TokenId]
        | Annotated[
            list[Annotated[list[TokenId], Field(min_length=1)]],
            Field(min_length=1, json_schema_extra=TEXTS_LIMIT),
        ]
    ) = Field(description="One list of token ids, or a list of them.")
    skip_special_tokens: bool = True


class TeiError(BaseModel):
    error: str
    error_type: Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]
