"""Prometheus metrics in a registry per app, so several apps (tests) never share counters."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from baihua.app.edge import DISCONNECTED
from baihua.encoder import Embedded

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# label values come from fixed sets, so no client can create series at will
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
CLIENT_CLOSED = "499"  # nginx's code: the client went away before the response


class Metrics:
    """The service's metrics; gauges read live values through `track_*` once resources exist."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "baihua_http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "baihua_http_request_duration_seconds",
            "HTTP request latency by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "baihua_encoder_batch_size",
            "Texts per encoder call after micro-batching.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.encode_seconds = Histogram(
            "baihua_encoder_seconds", "Duration of one encoder call.", registry=self.registry
        )
        self.truncated = Counter(
            "baihua_truncated_texts_total",
            "Texts cut at the model's token limit.",
            registry=self.registry,
        )
        self.shed = Counter(
            "baihua_shed_texts_total",
            "Texts refused or dropped before the encoder, by reason (queue_full, deadline, "
            "disconnected, client_share, shutdown).",
            ["reason"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "baihua_queue_depth", "Texts waiting for the encoder.", registry=self.registry
        )
        self.index_size = Gauge(
            "baihua_index_documents", "Documents in the index.", registry=self.registry
        )

    def observe_batch(self, embedded: Embedded, seconds: float) -> None:
        self.batch_size.observe(len(embedded.vectors))
        self.encode_seconds.observe(seconds)
        self.truncated.inc(int(embedded.truncated.sum()))

    def observe_shed(self, reason: str, n_texts: int) -> None:
        self.shed.labels(reason).inc(n_texts)

    def track(self, queue_depth: Callable[[], float], index_size: Callable[[], float]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.index_size.set_function(index_size)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", UNMATCHED)
            code = CLIENT_CLOSED if scope.get(DISCONNECTED) else str(status)
            labels = (method, template, code)
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
