"""Count and time every HTTP request into the service's metrics."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from baihua.app.admission import REFUSED
from baihua.app.edge import DISCONNECTED
from baihua.serving.metrics import Metrics

# label values come from fixed sets, so no client can create series at will
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
CLIENT_CLOSED = "499"  # nginx's code: the client went away before the response


class MetricsMiddleware:
    """Count and time every HTTP request by method, route template and status; a request
    whose client left before the answer counts as 499, not as served."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        counted = False

        def count() -> None:
            nonlocal counted
            counted = True
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", UNMATCHED)
            if scope.get(REFUSED):  # refused before routing, on one of a few fixed paths
                template = scope["path"]
            code = CLIENT_CLOSED if scope.get(DISCONNECTED) else str(status)
            labels = (method, template, code)
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not message.get("more_body", False):
                # counted before the last byte leaves: a client that reads /metrics right
                # after its answer finds it there, however the layers below unwind
                count()
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            if not counted:  # no complete answer: an error, or a client that left
                count()
