"""Prometheus metrics of one server: requests, latency, batches, queues, loaded models.

Each app has its own collector registry, so that several servers (tests) in one process keep
separate counts. ``GET /metrics`` serves the text format.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # no *_created series: timestamps of first use are noise here

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's counters, histograms and gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llmos_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "llmos_request_seconds",
            "request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "llmos_batch_size",
            "texts per model forward pass",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "llmos_batch_seconds",
            "duration of one batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "llmos_queue_depth", "requests waiting per model", ["model"], registry=r
        )
        self.rejected = Counter(
            "llmos_rejected",
            "requests refused or dropped: queue_full, deadline, rate_limit, too_large",
            ["reason"],
            registry=r,
        )
        self.streams = Counter(
            "llmos_streams",
            "streamed generations by how they ended: done, client_closed (decoding stopped "
            "early) or error",
            ["model", "outcome"],
            registry=r,
        )
        self.models_loaded = Gauge("llmos_models_loaded", "models in memory", registry=r)
        self.model_bytes = Gauge(
            "llmos_model_memory_bytes", "bytes of the loaded models' weights", registry=r
        )
        self.loads = Counter("llmos_model_loads", "model loads", registry=r)
        self.evictions = Counter(
            "llmos_model_evictions", "models unloaded to stay in the memory budget", registry=r
        )

    def observe_batch(self, model: str, texts: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(texts)
        self.batch_seconds.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
