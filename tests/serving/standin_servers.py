"""The TF Serving stand-in's REST and gRPC servers on loopback ports, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from serving.tfserving_standin.server import TFServingGRPC, TFServingREST
from tests.conftest import free_port


@contextlib.contextmanager
def rest_server(servables: Any, port: int | None = None) -> Iterator[str]:
    """`servables.app` (the stand-in's REST API, or any ASGI app) served by uvicorn in a
    thread on `port` (else a free one); yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            servables.app, host="127.0.0.1", port=port or free_port(), log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def grpc_server(servables: TFServingREST, port: int | None = None) -> Iterator[str]:
    """The stand-in's gRPC API (TF Serving's message size limits) on its own event loop, in a
    thread, on `port` (else a free one); yields its address."""
    port = port or free_port()
    loop = asyncio.new_event_loop()

    async def start() -> Any:
        server = TFServingGRPC(servables).server()
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return server

    server = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
