"""Run the app under uvicorn with a bounded, clean stop.

The first SIGTERM (or SIGINT) answers /readyz 503 and new encoder work 503, lets queued work
finish for `shutdown_grace_s` and fails what is left, stops listening once every request in
progress is answered, then the lifespan snapshots the index and the process exits 0. A second
signal exits at once (status 128 + signal): every acknowledged write is already in the
database, only the snapshot is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from baihua.app.main import begin_shutdown, create_app
from baihua.encoder import EmbeddingPipeline
from baihua.index import Store
from baihua.serving.settings import Settings

logger = logging.getLogger(__name__)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose signals drain the app first and whose second signal is final."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn stops listening and closes every connection without a request in progress at
        # once: a client that connected just before the signal and sends its request a moment
        # later would get a reset, not an answer. Keep listening while requests are in progress
        # (new encoder work is answered 503 meanwhile), then stop listening, let the loop read
        # what has arrived (a few turns, however busy it is), then shut down within what is
        # left of the grace period.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        while self.server_state.tasks and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for server in self.servers:
            server.close()
        for _ in range(4):
            await asyncio.sleep(0.05)
        self.config.timeout_graceful_shutdown = max(1, math.ceil(deadline - loop.time()))
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # not recorded in _captured_signals: uvicorn would re-raise it after a clean stop
        if self.should_exit:
            logger.warning("second signal %d: exiting now without a snapshot", sig)
            os._exit(128 + sig)
        logger.info("signal %d: draining for up to %g s", sig, self.grace_s)
        self.should_exit = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(begin_shutdown, self.app)


def serve(
    settings: Settings, pipeline: EmbeddingPipeline | None = None, store: Store | None = None
) -> None:
    """Serve `settings` on its host and port until a signal; returns after a clean stop.
    `pipeline` and `store`, when given, replace what `settings` describe (as in `create_app`)."""
    app = create_app(settings, pipeline, store)
    config = uvicorn.Config(app, host=settings.host, port=settings.port)
    server = GracefulServer(config, app, settings.shutdown_grace_s)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn logged why (the port is taken, ...)
