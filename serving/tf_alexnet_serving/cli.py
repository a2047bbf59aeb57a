"""`tf-alexnet serve`: the facade on uvicorn, found by the core CLI as a plugin.

The `tf_alexnet` package never imports this one (imports run one way, serving -> core): its
CLI loads `serve` from the `tf_alexnet.commands` entry point that this distribution declares.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from typing import Any

import pydantic
import pydantic_settings
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tf_alexnet import startup
from tf_alexnet.errors import UserError
from tf_alexnet.exported import ExportedModel
from tf_alexnet_serving.app import create_app
from tf_alexnet_serving.local import local_model_folders
from tf_alexnet_serving.logs import log_config
from tf_alexnet_serving.protocol import guarded_protocol
from tf_alexnet_serving.settings import ENV_PREFIX, Settings

LIST_EXAMPLES = {
    "cors_origins": '["https://app.example", "http://localhost:3000"]',
    "class_names": '["T-shirt/top", "Trouser", ...]',
}


def serve(
    host: str, port: int, model_base_path: str | None = None, model_name: str | None = None
) -> None:
    """Serves until interrupted; bad settings raise UserError (one line, no traceback)."""
    overrides: dict[str, Any] = {"model_base_path": model_base_path, "model_name": model_name}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except pydantic_settings.SettingsError as err:  # a list setting that is not JSON
        raise not_json_error(str(err)) from None
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"]))  # empty when settings disagree together
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "list_type" and isinstance(first.get("input"), str):
            raise not_json_error(f'field "{where}"') from None
        message += received_from_environment(where, message)
        raise UserError(
            f"Invalid serving setting {where}: {message}"
            if where
            else f"Invalid serving settings: {message}"
        ) from None
    check_can_listen(host, port)  # before the model loads: a busy port fails in a second
    if settings.resolved_backend() == "local":
        # The local backend runs the model in process, with TensorFlow's own kernel choice:
        # oneDNN, which `start_tensorflow` adds on AVX2-only CPUs for training, made one-image
        # calls slower there (docs/benchmarks/onednn_serving_amd-avx2.md).
        startup.start_tensorflow(onednn=False)
        # Fail early, with one line, when nothing is exported or no version is an export (a
        # damaged newest version is skipped, as the backend skips it).
        refusals = []
        for folder in local_model_folders(settings):
            try:
                ExportedModel(folder).check_bytes_signature()
                break
            except UserError as err:
                refusals.append(err)
        else:
            raise refusals[0]  # the newest version's
    # The facade logs each request as one JSON line (REQUEST_LOG); uvicorn's own would repeat it.
    # No WebSocket upgrades (the facade has no WebSocket route): uvicorn's websockets protocol
    # refused one with a bare 403, past the protocol's limits; an `Upgrade` request is now
    # answered as the plain HTTP request it also is.
    app = create_app(settings)
    uvicorn.run(
        shutdown_on_force_quit(app),
        host=host,
        port=port,
        access_log=False,
        log_config=log_config(settings.log_format),
        http=guarded_protocol(settings, app),
        ws="none",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )


def received_from_environment(name: str, message: str) -> str:
    """` Received: TF_ALEXNET_SERVE_TIMEOUT_S='abc'` for a message of pydantic's own ("Input
    should be a valid number, ..."), which named neither the variable that was set (in a
    compose file, a Kubernetes manifest) nor its value; empty when the message already shows
    the value or the setting was not read from the environment."""
    if not name or "Received" in message:
        return ""
    variable = f"{ENV_PREFIX}{name.upper()}"
    value = next((v for k, v in os.environ.items() if k.upper() == variable), None)
    return "" if value is None else f". Received: {variable}={value!r}"


def check_can_listen(host: str, port: int) -> None:
    """UserError unless a TCP socket binds to `host:port` as uvicorn will bind it (uvicorn
    itself would say so only after the model has loaded, and exit 3 with its own log line)."""
    if not host.strip():  # uvicorn, as bind(), took "" for every interface: not loopback
        raise UserError(
            "Cannot listen on an empty host: pass --host 127.0.0.1 (this machine only) or "
            f"--host 0.0.0.0 (every interface). Received: --host {host!r}"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:  # in use, not this machine's address, an unknown name
            where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            raise UserError(f"Cannot listen on {where}: {err.strerror or err}.") from None


def not_json_error(message: str) -> UserError:
    """The one line for a list setting not written as a JSON list: pydantic-settings said
    `error parsing value for field "cors_origins" from source "EnvSettingsSource"`, naming
    neither the variable nor what it expects (`TF_ALEXNET_SERVE_CORS_ORIGINS=https://a.example`,
    the natural first try), or only "Input should be a valid list" (`CLASS_NAMES=a,b`)."""
    found = re.search(r'field "(\w+)"', message)
    if found is None:
        return UserError(f"Invalid serving settings: {message}")
    name = found.group(1)
    variable = f"{ENV_PREFIX}{name.upper()}"
    value = next((v for k, v in os.environ.items() if k.upper() == variable), None)
    example = LIST_EXAMPLES.get(name, '["...", "..."]')
    received = f" Received: {value!r}" if value is not None else ""
    return UserError(
        f"Invalid serving setting {name}: {variable} should be a JSON list, such as "
        f"{example}.{received}"
    )


def shutdown_on_force_quit(app: ASGIApp) -> ASGIApp:
    """`app`, whose lifespan shuts down as usual when a second Ctrl-C forces uvicorn to quit.

    uvicorn then skips the lifespan's shutdown and cancels the task waiting for it: Starlette
    answered the cancellation as a failed shutdown, and uvicorn logged it as an ERROR with a
    traceback (`asyncio.exceptions.CancelledError`), the backend never stopped. The wait for
    shutdown ends in a shutdown instead, so the lifespan's own clean-up runs."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        started = False

        async def sent(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "lifespan.startup.complete"
            await send(message)

        async def received() -> Message:
            try:
                return await receive()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not started or task is None:
                    raise
                task.uncancel()
                return {"type": "lifespan.shutdown"}

        await app(scope, received, sent)

    return guarded
