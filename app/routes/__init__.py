"""All routes; everything but the health probes (ours and TEI's) and the playground page (its
API calls send the key) sits behind the optional API key."""

from fastapi import APIRouter, Depends

from baihua.app.routes import documents, embed, health, info, metrics, openai, search, tei, ui
from baihua.app.security import require_api_key

protected = APIRouter(dependencies=[Depends(require_api_key)])
for module in (info, embed, search, documents, openai, metrics, tei):
    protected.include_router(module.router)

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(tei.public)
api_router.include_router(ui.router)
api_router.include_router(protected)
