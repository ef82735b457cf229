"""The service's Prometheus metrics, in a registry per service so that several services (tests)
never share counters; the HTTP layer counts requests into it, the batcher its batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from baihua.encoder import Embedded
from baihua.serving.admission import AdmissionControl

LOOP_LAG_INTERVAL_S = 0.1
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)


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
        self.in_flight = Gauge(
            "baihua_requests_in_flight",
            "Encoding requests admitted and not yet answered.",
            registry=self.registry,
        )
        self.admission_limit = Gauge(
            "baihua_admission_limit",
            "Encoding requests admitted at most at once now (the measured rate times a quarter "
            "of the deadline).",
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "baihua_request_stage_seconds",
            "Time admitted encoding requests spend in each stage: parse (arrival to the "
            "encoder queue: body, validation), queue (waiting for the encoder), reply (vectors "
            "to the last byte sent).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "baihua_event_loop_lag_seconds",
            "How late the event loop ran a timer (every 0.1 s): what every request waits before "
            "the app sees it, or between its steps.",
            buckets=STAGE_BUCKETS,
            registry=self.registry,
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

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    async def watch_loop_lag(self) -> None:
        """Time the event loop's lateness until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LOOP_LAG_INTERVAL_S)
            self.loop_lag.observe(max(0.0, loop.time() - start - LOOP_LAG_INTERVAL_S))

    def track_admission(self, admission: AdmissionControl) -> None:
        self.in_flight.set_function(lambda: admission.in_flight)
        self.admission_limit.set_function(admission.limit)

    def track(self, queue_depth: Callable[[], float], index_size: Callable[[], float]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.index_size.set_function(index_size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
