"""The FastAPI app: `create_app(settings)` for `baihua serve`, with pipeline and store handed in
by tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from baihua.app.admission import AdmissionGate
from baihua.app.docs import install_docs
from baihua.app.edge import RequestGuard
from baihua.app.errors import install_error_handlers
from baihua.app.metrics_middleware import MetricsMiddleware
from baihua.app.openapi import install_openapi
from baihua.app.routes import api_router
from baihua.encoder import EmbeddingPipeline
from baihua.index import Store
from baihua.serving.admission import AdmissionControl
from baihua.serving.metrics import Metrics
from baihua.serving.service import load_service
from baihua.serving.settings import Settings

logger = logging.getLogger(__name__)

DESCRIPTION = """Chinese-first sentence embeddings with whitening and FAISS retrieval.

With `api_key` set, every route except `/healthz`, `/readyz`, `/health`, `GET /`, `/ping` and
these docs needs `Authorization: Bearer <key>`.
"""


def create_app(
    settings: Settings,
    pipeline: EmbeddingPipeline | None = None,
    store: Store | None = None,
) -> FastAPI:
    """The HTTP service; what is not handed in is built from `settings` after startup.

    The model and index load in the background so the process answers `/healthz` at once;
    `/readyz` and the other routes answer 503 until they are loaded.
    """
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(_load(app, settings, metrics, pipeline, store))
        lag = asyncio.create_task(metrics.watch_loop_lag())
        try:
            yield
        finally:
            for task in (loading, lag):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if app.state.service is not None:
                await app.state.service.close()

    app = FastAPI(
        title="baihua",
        description=DESCRIPTION,
        version=importlib.metadata.version("baihua"),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    app.state.not_ready_reason = app.state.not_ready_summary = "the model and index are loading"
    app.state.draining = False
    app.add_middleware(RequestGuard, max_request_bytes=settings.max_request_bytes)
    admission = AdmissionControl(settings.request_timeout_s, max_in_flight=settings.max_in_flight)
    metrics.track_admission(admission)
    app.add_middleware(AdmissionGate, control=admission)  # before the body is read
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: it sees 413s and 499s
    install_error_handlers(app)
    app.include_router(api_router)
    install_docs(app)
    install_openapi(app)
    return app


async def _load(
    app: FastAPI,
    settings: Settings,
    metrics: Metrics,
    pipeline: EmbeddingPipeline | None,
    store: Store | None,
) -> None:
    try:
        app.state.service = await load_service(settings, metrics, pipeline, store)
    except Exception as err:
        logger.exception("could not load the model or the index")
        app.state.not_ready_reason = f"loading failed: {type(err).__name__}: {err}"
        app.state.not_ready_summary = f"loading failed ({type(err).__name__}); see the server log"


def begin_shutdown(app: FastAPI) -> None:
    """On the first SIGTERM: answer not ready and drain the encoder within the grace period."""
    app.state.draining = True
    app.state.not_ready_reason = app.state.not_ready_summary = "shutting down"
    if app.state.service is not None:
        app.state.service.drain(app.state.settings.shutdown_grace_s)
