"""Admission at the edge of the app: a request to the encoder is admitted or refused before its
body is read, and an admitted one carries its arrival time to the batcher, whose deadline counts
from it.

A refusal is 503 with `Retry-After` (429 on OpenAI's and TEI's paths, whose clients back off on
it), in the path's error shape, built without routing, parsing or a thread: under overload the
server refuses at a fraction of what serving costs, so what it admits is served in time.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from baihua.app.errors import error_body
from baihua.app.schemas.tei import TEI_PATHS
from baihua.serving.admission import AdmissionControl, Overloaded

ARRIVED = "baihua.arrived"  # scope key: the event loop's time the request was admitted at
REFUSED = "baihua.refused"  # scope key set when the gate refused the request

# the routes that make the encoder work (POST); everything else is cheap and never refused here
ENCODING_PATHS = frozenset(
    {"/embed", "/search", "/v1/embeddings", "/documents", "/", "/invocations"}
)


class AdmissionGate:
    def __init__(self, app: ASGIApp, control: AdmissionControl) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or path not in ENCODING_PATHS:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        try:
            self.control.enter(now)
        except Overloaded as err:
            scope[REFUSED] = True
            await _refuse(path, send, err)
            return
        scope[ARRIVED] = now
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.control.leave(loop.time(), completed=status < 300)


async def _refuse(path: str, send: Send, err: Overloaded) -> None:
    code = 429 if path.startswith("/v1/") or path in TEI_PATHS else 503
    body = orjson.dumps(error_body(path, code, str(err)))
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(err.retry_after_s).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
