"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REFUSED_BEFORE_ROUTING = "refused_before_routing"
"""The `route` of the requests and connections that the HTTP protocol refuses before the app
sees them (`protocol.py`): 400 malformed HTTP, 408 headers too slow, 431 headers too large,
503 over `MAX_CONNECTIONS`. A CORS preflight is labelled `OPTIONS <route>` (`middleware.py`)."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tf_alexnet_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "tf_alexnet_request_seconds", "HTTP request latency", ["route"], registry=self.registry
        )
        self.batch_size = Histogram(
            "tf_alexnet_batch_size",
            "Images per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.backend_latency = Histogram(
            "tf_alexnet_backend_seconds", "Model call latency", registry=self.registry
        )
        self.model_version = Gauge(
            "tf_alexnet_model_version", "Model version served", registry=self.registry
        )
        self.model_ready = Gauge(
            "tf_alexnet_model_ready",
            "1 when the last check found the model ready (what /readyz answers), else 0",
            registry=self.registry,
        )
