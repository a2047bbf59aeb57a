"""Per request: the body-size gate, the request id, Prometheus metrics and the JSON log line."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from tf_alexnet_serving.errors import error_response
from tf_alexnet_serving.metrics import Metrics
from tf_alexnet_serving.settings import Settings

REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""A client's X-Request-ID is kept when it looks like an id (a UUID, a trace id), else replaced."""


def request_logger() -> logging.Logger:
    """`tf_alexnet_serving.requests`: one JSON line per request on stderr (unless configured)."""
    logger = logging.getLogger("tf_alexnet_serving.requests")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def install_request_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Every request gets an id (`X-Request-ID`), is measured, and is logged on one line."""
    request_log = request_logger() if settings.request_log else None

    @app.middleware("http")
    async def limit_measure_and_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        sent_id = request.headers.get("x-request-id", "")
        request_id = sent_id if REQUEST_ID.fullmatch(sent_id) else uuid.uuid4().hex
        request.state.request_id, request.state.images = request_id, 0
        length = request.headers.get("content-length")
        status = 500  # unless an answer comes back
        try:
            if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
                response: Response = error_response(
                    413, f"Request body over {settings.max_body_bytes:,} bytes."
                )
            else:
                response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            seconds = time.perf_counter() - start
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            metrics.requests.labels(path, str(status)).inc()
            metrics.latency.labels(path).observe(seconds)
            if request_log is not None:
                backend = getattr(request.app.state, "backend", None)
                request_log.info(
                    json.dumps(
                        {
                            "request_id": request_id,
                            "method": request.method,
                            "path": request.url.path,
                            "status": status,
                            "images": request.state.images,
                            "latency_ms": round(seconds * 1000, 3),
                            "model": getattr(backend, "name", None),
                            "model_version": getattr(backend, "version", None),
                        }
                    )
                )
