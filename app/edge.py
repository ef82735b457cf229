"""The outermost HTTP guard: a bounded body read before any other work, and requests whose client
has gone cancelled, so their queued encoder work is dropped.

The body is read here, in full and at most `max_request_bytes` of it, before routing, the API key
check or JSON parsing spend anything on it; larger bodies are a 413 (by Content-Length before a
byte is read, else as soon as the stream passes the limit). While the route runs, the connection
is watched: when the client disconnects, the route's task is cancelled (the batcher then drops its
job) and the request is counted with status 499.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from baihua.app.errors import error_body

DISCONNECTED = "baihua.disconnected"  # scope key set when the client went away mid-request


class BodyTooLarge(Exception):
    pass


class RequestGuard:
    def __init__(self, app: ASGIApp, max_request_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_length_header(scope)
            body = await self._read_body(receive)
        except BodyTooLarge as err:
            await _send_413(scope, send, str(err))
            return
        if body is None:  # the client left while sending
            scope[DISCONNECTED] = True
            return
        await self._run_watched(scope, body, receive, send)

    def _check_length_header(self, scope: Scope) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return  # the server's HTTP parser answers malformed framing itself
                if length > self.max_request_bytes:
                    raise BodyTooLarge(self._too_large(f"{length} bytes"))

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                raise BodyTooLarge(self._too_large(f"more than {self.max_request_bytes} bytes"))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: str) -> str:
        return (
            f"the request body has {size}; the limit is {self.max_request_bytes} "
            "(max_request_bytes): send fewer or shorter texts per request"
        )

    async def _run_watched(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        disconnected = asyncio.Event()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        route = asyncio.ensure_future(self.app(scope, replay, tracking_send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({route, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not route.done() and not response_started:
                scope[DISCONNECTED] = True
                route.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if not route.done():
                # a streaming response whose client left: let it see the disconnect and finish
                disconnected.set()
        await asyncio.wait({route})
        if not route.cancelled():
            route.result()  # the route's own error, for the server error middleware


async def _send_413(scope: Scope, send: Send, message: str) -> None:
    body = orjson.dumps(error_body(scope["path"], 413, message))
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
