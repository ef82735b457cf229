from fastapi import APIRouter, HTTPException, status

from baihua.app.deps import JSON_BODY, ServiceDep, SettingsDep
from baihua.app.openapi import BODY_ERRORS, PROTECTED_ERRORS, error_responses
from baihua.app.schemas import Deleted, Document, DocumentId, DocumentsRequest, DocumentsResponse

router = APIRouter(prefix="/documents", tags=["documents"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=JSON_BODY,
    responses=error_responses(*PROTECTED_ERRORS, *BODY_ERRORS, 409),
)
async def add_documents(
    body: DocumentsRequest, service: ServiceDep, settings: SettingsDep
) -> DocumentsResponse:
    """Embed (as passages) and store documents; omitted ids are assigned and returned.
    An existing id is a 409 unless `upsert` is true."""
    body.check_limits(settings)
    if repeated := body.repeated_ids():
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"ids repeat within the request: {repeated[:10]}"
        )
    docs = body.documents
    written = await service.documents.add(
        [doc.text for doc in docs],
        [doc.payload for doc in docs],
        [doc.id for doc in docs],
        upsert=body.upsert,
    )
    return DocumentsResponse(ids=written.ids, truncated=written.truncated)


@router.get("/{id}", responses=error_responses(*PROTECTED_ERRORS, 404))
async def get_document(id: DocumentId, service: ServiceDep) -> Document:
    document = await service.documents.get(id)
    if document is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document with id {id}")
    return Document.model_validate(document, from_attributes=True)


@router.delete("/{id}", responses=error_responses(*PROTECTED_ERRORS, 404))
async def delete_document(id: DocumentId, service: ServiceDep) -> Deleted:
    if not await service.documents.delete(id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document with id {id}")
    return Deleted(id=id)
