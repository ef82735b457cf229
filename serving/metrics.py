"""The service's Prometheus metrics, in a registry per service so that several services (tests)
never share counters; the HTTP layer counts requests into it, the batcher its batches."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from baihua.encoder import Embedded

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


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
