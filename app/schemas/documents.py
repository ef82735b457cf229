"""The bodies of the /documents routes."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from baihua.app.schemas.common import (
    TEXTS_LIMIT,
    DocumentId,
    Loc,
    NonEmptyFilter,
    Payload,
    RequestModel,
    Text,
    TextsRequest,
    exactly_one_of,
    payload_errors,
)
from baihua.serving.settings import Settings


class DocumentIn(RequestModel):
    id: DocumentId | None = Field(None, description="Chosen by the caller, or assigned if omitted.")
    text: Text
    payload: Payload = Field(default_factory=dict)


class DocumentsRequest(TextsRequest):
    list_field = "documents"

    documents: list[DocumentIn] = Field(min_length=1, json_schema_extra=TEXTS_LIMIT)
    upsert: bool = Field(False, description="Replace documents whose id exists instead of 409.")

    def repeated_ids(self) -> list[int]:
        """Ids given more than once (a 409, like a stored id: JSON Schema cannot say it)."""
        counts = Counter(doc.id for doc in self.documents if doc.id is not None)
        return sorted(i for i, n in counts.items() if n > 1)

    def located_texts(self) -> list[tuple[Loc, str]]:
        return [(("documents", i, "text"), doc.text) for i, doc in enumerate(self.documents)]

    def extra_limit_errors(self, settings: Settings) -> list[dict[str, Any]]:
        errors = []
        for i, doc in enumerate(self.documents):
            errors.extend(payload_errors(doc.payload, ("documents", i, "payload"), settings))
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


Filter = dict[str, Any]
MAX_PAGE = 1000
DocumentIds = Annotated[list[DocumentId], Field(min_length=1, max_length=MAX_PAGE)]


class DocumentPage(BaseModel):
    documents: list[Document] = Field(description="In id order.")
    next_after: int | None = Field(
        description="Send as `after` for the next page; null on the last page."
    )


class DocumentCount(BaseModel):
    count: int


class GetDocumentsRequest(RequestModel):
    ids: DocumentIds


class DocumentsFound(BaseModel):
    documents: list[Document] = Field(description="The stored ones, in request order.")
    missing: list[int] = Field(description="Requested ids that are not stored.")


class DeleteDocumentsRequest(RequestModel):
    """Delete by ids or by a payload filter (a filter of `{}` would match every document and is
    refused; delete the data folder instead)."""

    model_config = exactly_one_of("ids", "filter")
    one_of = ("ids", "filter")

    ids: SkipJsonSchema[None] | DocumentIds = None
    filter: SkipJsonSchema[None] | NonEmptyFilter = None


class DeletedCount(BaseModel):
    deleted: int = Field(description="How many documents existed and were deleted.")


class PayloadUpdate(RequestModel):
    payload: Payload = Field(description="Replaces the payload; text and vector stay.")

    def check_limits(self, settings: Settings) -> None:
        """422 for a payload the store could not give back (as `DocumentsRequest` checks)."""
        errors = payload_errors(self.payload, ("payload",), settings)
        if errors:
            raise RequestValidationError(errors)
