"""uvicorn's HTTP protocol with the limits a server facing clients needs before any request.

uvicorn (0.54-0.55, httptools) times a connection out only between requests, and puts no limit
on the size of a request's headers or on the number of connections. So a client that connects
and sends nothing, or sends its headers a byte at a time, held its connection for good; 20,000
such connections used up the process's file descriptors (the model poller failed with "Too many
open files" and other clients were dropped); and a 100 MiB header was read whole, blocking the
event loop for seconds. `guarded_protocol` adds, per connection:

- `HEADER_TIMEOUT_S`: a request's headers must all come within it, from the connection's
  opening or the request's first byte (408 and close past it; BODY_TIMEOUT_S covers the body);
- `MAX_HEADER_BYTES`: headers past it get 431 and close;
- `MAX_CONNECTIONS`: a connection past it gets 503 and close, at once;
- an answer sent before the request's body was all read (a 404, 401, 413 or 415, or any route
  that reads no body) leaves `HEADER_TIMEOUT_S` for the rest of the body to arrive, then the
  connection is closed. uvicorn reads such a body on to its end and re-arms its keep-alive
  timer on every byte, so a body sent a byte every few seconds held the connection for good
  (five of them locked every client out of a server with MAX_CONNECTIONS=5).

The answers are JSON, as the facade's own, and carry its `X-Request-ID` and security headers,
and its CORS headers for a request from an allowed origin whose `Origin` header had come;
malformed HTTP (uvicorn's plain-text 400) is answered so too. Each refusal is counted in the
app's metrics (`tf_alexnet_requests_total{route="refused_before_routing"}`) and logged in its
request log with the client's address, so an operator sees slowloris attempts and hits on the
connection limit.

A WebSocket upgrade is never attempted (`tf-alexnet serve` runs uvicorn with `ws="none"`; the
facade has no WebSocket route): such a request is a plain HTTP request, answered as any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tf_alexnet_serving.errors import clipped
from tf_alexnet_serving.metrics import REFUSED_BEFORE_ROUTING, Metrics
from tf_alexnet_serving.middleware import (
    ANSWERED_BY_PROTOCOL,
    SECURITY_HEADERS,
    client_address,
    cors_headers,
    request_line,
    request_logger,
)
from tf_alexnet_serving.settings import Settings

LOGGED_PATH_CHARS = 200
"""At most this much of a refused request's path is logged (a 431's may be 64 KiB)."""

REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; `guarded_protocol` sets the three limits, and the app whose
    metrics and request log count the refusals."""

    header_timeout_s = 10.0
    max_header_bytes = 64 * 1024
    max_connections = 1000
    facade: FastAPI | None = None  # its state has the metrics and, once started, the backend
    cors_origins: tuple[str, ...] = ()  # CORS_ORIGINS (`guarded_protocol` sets it)
    request_log: logging.Logger | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0  # read while in the headers (bounds what httptools buffers)
        self._header_size = 0  # the request line and headers, from the parser
        self._refused = False
        self._in_headers = True  # the next bytes are a request's start line and headers
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_pending = False  # the request's body is still coming
        self._drain_timer: asyncio.TimerHandle | None = None
        self._started = time.perf_counter()  # the request's, for a refusal's latency
        self._method: str | None = None  # the request's, once its start line came
        if len(self.connections) > self.max_connections:
            self._refuse(503, f"Over {self.max_connections:,} connections; retry later.")
            return
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        self._stop_drain_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered and closing: what the client still sends is dropped
            return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if (
            self._in_headers
            and self._header_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(431, f"Request headers over {self.max_header_bytes:,} bytes.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # a later request on a kept-alive connection (its first
            self._in_headers, self._header_bytes = True, 0  # read is not counted: one read)
            self._start_header_timer()
            self._started = time.perf_counter()
        self._header_size, self._method = 0, None

    def on_url(self, url: bytes) -> None:
        self._header_size += len(url)
        if self._method is None:  # the parser has read the method by now
            self._method = self.parser.get_method().decode("ascii", "replace")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._body_pending = True  # until on_message_complete (at once without a body)
        self._stop_header_timer()
        if self._header_size > self.max_header_bytes:  # they came in one read
            self._refuse(431, f"Request headers over {self.max_header_bytes:,} bytes.")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._stop_drain_timer()
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._body_pending and not self.transport.is_closing():  # answered before the body
            self._drain_timer = self.loop.call_later(self.header_timeout_s, self._body_late)

    def _stop_drain_timer(self) -> None:
        _cancel(self._drain_timer)
        self._drain_timer = None

    def _body_late(self) -> None:
        """The rest of an answered request's body did not come in time: close (the client
        has its answer)."""
        self._drain_timer = None
        if self._body_pending and not self.transport.is_closing():
            self.transport.close()

    def _start_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _stop_header_timer(self) -> None:
        _cancel(self._header_timer)
        self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            self._refuse(
                408, f"The request's headers did not come within {self.header_timeout_s:g} s."
            )

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP (uvicorn answered it in plain text, unlogged and uncounted).

        Malformed framing in a body (a chunk size that is not hex) comes after the request
        went to the app. If the app has answered it already (a 415 from the headers), the
        connection is closed with no second answer: one more 400 followed the 415 on the wire,
        an answer to no request, which a kept-alive client would have read as its next
        request's. If the app has not answered yet, the 400 is the request's one answer: the
        app (which then finds the client gone) neither counts nor logs it a second time, as a
        499 under its route."""
        if self._refused:
            return
        if self._body_pending and self.cycle is not None:
            if self.cycle.response_started:
                self._refused = True
                self.transport.close()
                return
            self.cycle.scope["state"][ANSWERED_BY_PROTOCOL] = True
        self._refuse(400, msg)

    def _unsupported_upgrade_warning(self) -> None:
        """An `Upgrade` request is answered as a plain HTTP request (see the module docstring):
        uvicorn's two warnings per such request (one advising to install a WebSocket library)
        let any client fill the log with advice for the operator."""

    def _refuse(self, status: int, detail: str) -> None:
        """Answers `status` with `{"detail": ...}`, closes the connection, and counts and logs
        the refusal."""
        self._refused = True
        self._stop_header_timer()
        request_id = uuid.uuid4().hex
        body = json.dumps({"detail": detail}).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status])]
        head += [
            name + b": " + value + b"\r\n"
            for name, value in (
                *self.server_state.default_headers,
                (b"x-request-id", request_id.encode()),
                *SECURITY_HEADERS,
                # A browser app on an allowed origin reads the refusal (a 400 for bad chunk
                # framing, a 431): without these it saw "Failed to fetch", as for a server down.
                *cors_headers(self.headers, self.cors_origins),
            )
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
        self._record(status, detail, request_id)

    def _record(self, status: int, detail: str, request_id: str) -> None:
        """The refusal in the app's metrics and request log, as a request the app answered."""
        if self.facade is None:
            return
        seconds = time.perf_counter() - self._started
        metrics: Metrics = self.facade.state.metrics
        metrics.requests.labels(REFUSED_BEFORE_ROUTING, str(status)).inc()
        metrics.latency.labels(REFUSED_BEFORE_ROUTING).observe(seconds)
        if self.request_log is None:
            return
        path = None
        if self._method is not None:  # the start line began: the path as far as it came
            path = getattr(self, "url", b"").partition(b"?")[0].decode("latin-1")
            path = clipped(path, LOGGED_PATH_CHARS)
        backend = getattr(self.facade.state, "backend", None)
        self.request_log.info(
            request_line(
                request_id=request_id,
                client=client_address(self.client),
                method=self._method,
                path=path,
                status=status,
                images=0,
                seconds=seconds,
                backend=backend,
                model_version=getattr(backend, "version", None),
                detail=detail,
            )
        )


def guarded_protocol(settings: Settings, app: FastAPI | None = None) -> type[Any]:
    """`GuardedHttpToolsProtocol` with the limits of `settings`, for `uvicorn.run(http=...)`;
    its refusals are counted in `app`'s metrics and logged in its request log (the
    `REQUEST_LOG` setting), when `app` is given (`create_app`'s)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_header_bytes": settings.max_header_bytes,
            "max_connections": settings.max_connections,
            "cors_origins": tuple(settings.cors_origins),
            "facade": app,
            "request_log": request_logger() if app is not None and settings.request_log else None,
        },
    )


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    """Cancel `timer`, if there is one."""
    if timer is not None:
        timer.cancel()
