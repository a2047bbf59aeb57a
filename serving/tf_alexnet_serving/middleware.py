"""Per request: the body-size gate, CORS in the facade's error shape, the request id, Prometheus
metrics and the JSON log line."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tf_alexnet_serving.errors import as_it_came, error_response, internal_error, shutdown_error
from tf_alexnet_serving.logs import timestamp
from tf_alexnet_serving.metrics import Metrics
from tf_alexnet_serving.settings import Settings

REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""A client's X-Request-ID is kept when it looks like an id (a UUID, a trace id), else replaced."""


RANGE_HEADERS = (b"range", b"if-range")
"""Dropped from requests: the facade's answers are small, and the API pages' file server
answered a malformed or unsatisfiable Range in plain text (400, 416), unlike every other error.
So answers do not say `Accept-Ranges: bytes` either (the file server did)."""

ANSWERED_BY_PROTOCOL = "answered_by_protocol"
"""Set in a request's ASGI `state` when the HTTP protocol answered it itself (malformed
framing in its body, `protocol.py`) and has counted and logged that answer."""

MAX_LOGGED_BODY = 16 * 1024
"""An error answer longer than this is not read for the log line's `detail`."""
MAX_LOGGED_DETAIL = 500
"""The longest `detail` on a log line (the facade's own messages are shorter)."""


SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),  # a JSON answer is never read as a script
    (b"x-frame-options", b"DENY"),  # the page (which keeps an API key) is never framed
    (b"content-security-policy", b"frame-ancestors 'none'"),
)
"""On every answer."""

CORS_EXPOSED = ("X-Request-ID", "Retry-After")
"""The answer headers a browser app on an allowed origin may read."""


def cors_options(origins: Sequence[str]) -> dict[str, Any]:
    """`JsonCORSMiddleware`'s arguments for `CORS_ORIGINS`."""
    return {
        "allow_origins": list(origins),
        "allow_methods": ["GET", "HEAD", "POST"],  # the API's; a preflight lists these
        "allow_headers": ["Content-Type", "X-API-Key", "X-Request-ID"],
        "expose_headers": list(CORS_EXPOSED),
    }


def cors_headers(
    request_headers: list[tuple[bytes, bytes]] | None, origins: Sequence[str]
) -> list[tuple[bytes, bytes]]:
    """The CORS headers `JsonCORSMiddleware` puts on an answer to a request with these headers,
    for answers made outside it (`protocol.py`): none without `origins` (`CORS_ORIGINS`) or
    before a request's headers came (`None`). Starlette decides, as for every other answer:
    which origin is allowed, and which headers say so (as its `CORSMiddleware.send`)."""
    if request_headers is None or not origins:
        return []
    origin = Headers(raw=request_headers).get("origin")
    cors = _cors_decider(tuple(origins))
    headers = MutableHeaders()
    if origin is not None:
        headers.update(cors.simple_headers)
    if origin is not None and (
        (cors.allow_all_origins and cors.allow_credentials)
        or (not cors.allow_all_origins and cors.is_allowed_origin(origin))
    ):
        cors.allow_explicit_origin(headers, origin)
    else:
        headers["Vary"] = "Origin"
    return list(headers.raw)


@functools.lru_cache(maxsize=4)  # one `CORS_ORIGINS` a server
def _cors_decider(origins: tuple[str, ...]) -> JsonCORSMiddleware:
    """A `JsonCORSMiddleware` built only for its decisions (`cors_headers`), once per origins."""
    return JsonCORSMiddleware(_no_app, **cors_options(origins))


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The application of a `JsonCORSMiddleware` built only for its decisions (`cors_headers`)."""
    raise RuntimeError("cors_headers' middleware is never called")


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
    """The middleware in the order they run: every request gets an id (`X-Request-ID`), is
    measured and is logged on one line (outermost: it sees every answer, a CORS preflight's
    too); then CORS, when `CORS_ORIGINS` is set; then the Content-Length gate, inside CORS so
    that its 413 carries the CORS headers as every other answer (a browser app on another
    origin saw "Failed to fetch"); innermost, the 500 of a bug, so that it carries the request
    id, the security headers and CORS's as every other answer. Starlette runs the middleware
    added last first."""
    app.add_middleware(BugAnswer)
    app.add_middleware(BodySizeGate, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(JsonCORSMiddleware, **cors_options(settings.cors_origins))
    app.add_middleware(
        RequestMiddleware,
        metrics=metrics,
        request_log=request_logger() if settings.request_log else None,
    )


class BodySizeGate:
    """A body over `MAX_BODY_BYTES` by its Content-Length is refused (413) before it is read."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = Headers(scope=scope).get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                refusal = error_response(413, f"Request body over {self.max_body_bytes:,} bytes.")
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BugAnswer:
    """An exception no handler took (a bug) is answered 500 in JSON here, inside the other
    middleware, then raised on for the server to log with its traceback; a request cancelled
    at shutdown, 503.

    Starlette answers it from its outermost layer, outside every middleware added: the 500
    had no `X-Request-ID` (the one key to its traceback in the log), no security headers, and
    no CORS headers, so a browser app on another origin saw "Failed to fetch" instead."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running SHUTDOWN_TIMEOUT_S after SIGTERM and
            # waits for nothing more of them: a 503, inside CORS (a browser app can read it).
            if started:
                raise
            await shutdown_error()(scope, receive, send)
        except Exception as exc:
            if not started:  # else the client has part of an answer: nothing more to say
                await internal_error(exc)(scope, receive, send)
            raise


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the facade's error shape
    (`{"detail": "Disallowed CORS origin."}`): Starlette answers it in plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        refusal = error_response(response.status_code, f"{bytes(response.body).decode()}.")
        for name, value in response.headers.items():  # Vary, Access-Control-Allow-*
            if name not in ("content-type", "content-length"):
                refusal.headers[name] = value
        return refusal


PREFLIGHT = "OPTIONS"
"""An OPTIONS request (a CORS preflight, else a 405) is labelled `OPTIONS <route>` in the
metrics, so that a browser app's preflights are not counted as its route's requests."""


def client_address(client: tuple[str, int] | list[Any] | None) -> str | None:
    """`host:port` (`[host]:port` for IPv6) of an ASGI scope's `client`, or None."""
    if not client:
        return None
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def request_line(
    *,
    request_id: str,
    client: str | None,
    method: str | None,
    path: str | None,
    status: int,
    images: int,
    seconds: float,
    backend: Any,
    model_version: Any,
    detail: str | None = None,
) -> str:
    """One line of the request log; `detail`, an error answer's reason (and, for a refusal
    made before the app, see `protocol.py`, method and path are None when they had not
    arrived)."""
    line = {
        "time": timestamp(),
        "request_id": request_id,
        "client": client,
        "method": method,
        "path": path,
        "status": status,
        "images": images,
        "latency_ms": round(seconds * 1000, 3),
        "model": getattr(backend, "name", None),
        "model_version": model_version,
    }
    if detail is not None:
        line["detail"] = detail
    return json.dumps(line)


def error_detail(body: bytes) -> str | None:
    """The `detail` of an error answer's JSON body (every error the facade answers has one),
    cut to `MAX_LOGGED_DETAIL` characters; None for a body without one."""
    try:
        found = json.loads(body).get("detail") if len(body) <= MAX_LOGGED_BODY else None
    except (ValueError, AttributeError):
        found = None
    return found[:MAX_LOGGED_DETAIL] if isinstance(found, str) else None


class RequestMiddleware:
    """Plain ASGI (no `BaseHTTPMiddleware`, which runs each request through an extra task and
    memory streams): the request id, metrics and the log line."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        request_log: logging.Logger | None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.request_log = request_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        if any(name in RANGE_HEADERS for name, _ in scope["headers"]):  # every answer is whole
            scope = {**scope, "headers": [h for h in scope["headers"] if h[0] not in RANGE_HEADERS]}
        headers = Headers(scope=scope)
        sent_id = headers.get("x-request-id", "")
        request_id = sent_id if REQUEST_ID.fullmatch(sent_id) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"], state["images"] = request_id, 0
        status = 500  # unless an answer starts
        detail: str | None = None  # an error answer's reason, for the log line

        async def send_with_id(message: Message) -> None:
            nonlocal status, detail
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0].lower() != b"accept-ranges"),
                    (b"x-request-id", request_id.encode()),
                    *SECURITY_HEADERS,
                ]
            elif status >= 400 and detail is None:
                detail = error_detail(message.get("body", b""))
            await send(message)

        try:  # a bug's 500 and the shutdown's 503 are `BugAnswer`'s, inside CORS
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            self._record(scope, state, request_id, status, seconds, detail)

    @staticmethod
    def _route_label(scope: Scope) -> str:
        """The route of a request that no API route answered (refused by the Content-Length
        gate, the API pages' assets, a method not allowed), else "unmatched": the app's paths
        have no parameters and a mount is labelled by its own path, so the label takes one
        value per route at most."""
        scope = as_it_came(scope)
        for route in scope["app"].router.routes:
            if route.matches(scope)[0] != Match.NONE:
                return str(route.path) if isinstance(route, Mount) else str(scope["path"])
        return "unmatched"

    def _record(
        self,
        scope: Scope,
        state: dict[str, Any],
        request_id: str,
        status: int,
        seconds: float,
        detail: str | None,
    ) -> None:
        if state.get(ANSWERED_BY_PROTOCOL):  # counted and logged there, with its 400
            return
        path = getattr(scope.get("route"), "path", None) or self._route_label(scope)
        if scope["method"] == PREFLIGHT:
            path = f"{PREFLIGHT} {path}"
        self.metrics.requests.labels(path, str(status)).inc()
        self.metrics.latency.labels(path).observe(seconds)
        if self.request_log is None:
            return
        backend = getattr(scope["app"].state, "backend", None)
        self.request_log.info(
            request_line(
                request_id=request_id,
                client=client_address(scope.get("client")),
                method=scope["method"],
                path=scope["path"],
                status=status,
                images=state.get("images", 0),
                seconds=seconds,
                backend=backend,
                model_version=state.get("model_version", getattr(backend, "version", None)),
                detail=detail,
            )
        )
