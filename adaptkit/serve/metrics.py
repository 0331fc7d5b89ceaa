"""The server's Prometheus metrics, in a registry of its own (two apps in one process never mix)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """requests by endpoint and status, request latency, batch sizes and encoding time, queue depth."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter("adaptkit_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("adaptkit_request_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.images = Counter("adaptkit_images", "Images classified, and images refused per reason",
                              ["outcome"], registry=self.registry)
        self.batch_size = Histogram("adaptkit_batch_size", "Images encoded together", buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.batch_seconds = Histogram("adaptkit_batch_seconds", "Time to encode and classify one batch",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue = Gauge("adaptkit_queue_depth", "Images waiting to be encoded", registry=self.registry)
        self.queue.set_function(queue_depth)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
