"""Documents: add (embedded as passages), read, list and count by payload filter, delete by ids or
filter, replace a payload without re-embedding."""

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError

from baihua.app.deps import JSON_BODY, ArrivedDep, ClientDep, ServiceDep, SettingsDep
from baihua.app.filter_schema import FILTER_REF, check_filter_scope
from baihua.app.openapi import (
    BODY_ERRORS,
    ENCODING_ERRORS,
    PROTECTED_ERRORS,
    WRITE_ERRORS,
    error_responses,
)
from baihua.app.schemas.common import DocumentId
from baihua.app.schemas.documents import (
    MAX_PAGE,
    Deleted,
    DeletedCount,
    DeleteDocumentsRequest,
    Document,
    DocumentCount,
    DocumentPage,
    DocumentsFound,
    DocumentsRequest,
    DocumentsResponse,
    Filter,
    GetDocumentsRequest,
    PayloadUpdate,
)

router = APIRouter(prefix="/documents", tags=["documents"])

# A JSON object in a query parameter: OpenAPI says so with `content`, which FastAPI's Query
# cannot express, so the parameter is declared here and parsed by `payload_filter`.
FILTER_PARAMETER = {
    "parameters": [
        {
            "name": "filter",
            "in": "query",
            "required": False,
            "description": 'Payload filter as JSON, e.g. {"lang": "zh"}: only matching documents.',
            "content": {"application/json": {"schema": {"$ref": FILTER_REF}}},
        }
    ]
}


def payload_filter(
    filter: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> Filter | None:
    if filter is None:
        return None
    try:
        parsed: Any = json.loads(filter)
    except json.JSONDecodeError as err:
        parsed, reason = None, f"is not valid JSON ({err.msg})"
    except RecursionError:
        parsed, reason = None, "is nested too deeply to read"
    else:
        reason = "must be a JSON object of payload key -> value"
    if isinstance(parsed, dict):
        try:
            check_filter_scope(parsed, where="")
        except ValueError as err:
            parsed, reason = None, str(err)
    if not isinstance(parsed, dict):
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "filter"), "msg": reason}]
        )
    return parsed


FilterDep = Annotated[Filter | None, Depends(payload_filter)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=JSON_BODY,
    responses=error_responses(
        *PROTECTED_ERRORS, *BODY_ERRORS, *ENCODING_ERRORS, *WRITE_ERRORS, 409
    ),
)
async def add_documents(
    body: DocumentsRequest,
    service: ServiceDep,
    settings: SettingsDep,
    client: ClientDep,
    arrived: ArrivedDep,
) -> DocumentsResponse:
    """Embed (as passages) and store documents; omitted ids are assigned and returned.
    An existing id is a 409 unless `upsert` is true.

    On a Milvus server shared by several replicas the 409 is best effort: the same id added
    through two replicas at the same moment is stored once, the later write winning, as with
    `upsert` (Milvus cannot refuse a second write of one id)."""
    body.check_limits(settings)
    if repeated := body.repeated_ids():
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"ids repeat within the request: {repeated[:10]}"
        )
    docs = body.documents
    with body.naming_rejected_texts():
        written = await service.documents.add(
            [doc.text for doc in docs],
            [doc.payload for doc in docs],
            [doc.id for doc in docs],
            upsert=body.upsert,
            client=client,
            arrived=arrived,
        )
    return DocumentsResponse(ids=written.ids, truncated=written.truncated)


@router.get("", responses=error_responses(*PROTECTED_ERRORS), openapi_extra=FILTER_PARAMETER)
async def list_documents(
    service: ServiceDep,
    filter: FilterDep,
    after: Annotated[
        DocumentId | None, Query(description="The last id of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> DocumentPage:
    """A page of documents in id order; pass `next_after` back as `after` for the next one."""
    page = await service.documents.scan(-1 if after is None else after, limit + 1, filter)
    more = len(page) > limit
    return DocumentPage(
        documents=[Document.model_validate(d, from_attributes=True) for d in page[:limit]],
        next_after=page[limit - 1].id if more else None,
    )


@router.get("/count", responses=error_responses(*PROTECTED_ERRORS), openapi_extra=FILTER_PARAMETER)
async def count_documents(service: ServiceDep, filter: FilterDep) -> DocumentCount:
    """How many documents (match the filter)."""
    return DocumentCount(count=await service.documents.count(filter))


@router.post(
    "/get", dependencies=JSON_BODY, responses=error_responses(*PROTECTED_ERRORS, *BODY_ERRORS)
)
async def get_documents(body: GetDocumentsRequest, service: ServiceDep) -> DocumentsFound:
    """Several documents at once; ids not stored are listed in `missing`."""
    found = await service.documents.get_many(body.ids)
    stored = {doc.id for doc in found}
    return DocumentsFound(
        documents=[Document.model_validate(d, from_attributes=True) for d in found],
        missing=[i for i in body.ids if i not in stored],
    )


@router.post(
    "/delete",
    dependencies=JSON_BODY,
    responses=error_responses(*PROTECTED_ERRORS, *BODY_ERRORS, *WRITE_ERRORS),
)
async def delete_documents(body: DeleteDocumentsRequest, service: ServiceDep) -> DeletedCount:
    """Delete by `ids` or by a payload `filter`; ids not stored are ignored."""
    if body.ids is not None:
        return DeletedCount(deleted=await service.documents.delete_many(body.ids))
    assert body.filter is not None  # one of the two, by the request's validation
    return DeletedCount(deleted=await service.documents.delete_where(body.filter))


@router.get("/{id:int}", responses=error_responses(*PROTECTED_ERRORS, 404))
async def get_document(id: DocumentId, service: ServiceDep) -> Document:
    document = await service.documents.get(id)
    if document is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document with id {id}")
    return Document.model_validate(document, from_attributes=True)


@router.patch(
    "/{id:int}",
    dependencies=JSON_BODY,
    responses=error_responses(*PROTECTED_ERRORS, *WRITE_ERRORS, 400, 404, 413, 415),
)
async def update_payload(
    id: DocumentId, body: PayloadUpdate, service: ServiceDep, settings: SettingsDep
) -> Document:
    """Replace the document's payload; its text and vector stay (nothing is re-embedded)."""
    body.check_limits(settings)
    document = await service.documents.set_payload(id, body.payload)
    if document is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document with id {id}")
    return Document.model_validate(document, from_attributes=True)


@router.delete("/{id:int}", responses=error_responses(*PROTECTED_ERRORS, *WRITE_ERRORS, 404))
async def delete_document(id: DocumentId, service: ServiceDep) -> Deleted:
    if not await service.documents.delete(id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document with id {id}")
    return Deleted(id=id)
