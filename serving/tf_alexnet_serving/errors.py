"""The facade's errors: one JSON shape for every refusal, `{"detail": "<message>"}`."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from tf_alexnet import contract


class UpstreamError(Exception):
    """The backend failed; `status` is what the facade answers (with `Retry-After` if set)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


MODEL_SELECTION = re.compile(
    r"servable version label|Serving signature (?:name|key)|not found in signature def"
)
"""In TF Serving's INVALID_ARGUMENT and FAILED_PRECONDITION texts: the request named a version
label ("Unrecognized servable version label: stable") or a signature (`Serving signature name:
"serving_bytes" not found in signature def`) that the server does not have. Not a bare
"signature": a failed decode names the graph's `signature_wrapper` function."""


def refused_by_tfserving(message: str) -> UpstreamError:
    """TF Serving refused a request as invalid: the image's fault (400), unless it is the
    facade's settings' (503: TF Serving has no such version label, or the served model is not
    a tf-alexnet export). Every image fails alike then, and "could not be decoded" would send
    the client looking at their image."""
    if MODEL_SELECTION.search(message):
        return UpstreamError(503, f"TF Serving cannot serve the configured model: {message}")
    return UpstreamError(400, message)


class Checkable(Protocol):
    unavailable_reason: str

    async def ready(self) -> bool: ...
    async def probe(self) -> None: ...


async def image_or_model(refusal: UpstreamError, backend: Checkable) -> UpstreamError:
    """What to answer for an image TF Serving refused as invalid (`refusal`, a 400): the
    image's fault only when the configured model is served (a new version may not be an
    export) and answers a known-good image; else a 503 that names the model's fault."""
    if not await backend.ready():
        return UpstreamError(503, backend.unavailable_reason, retry_after=1)
    try:
        await backend.probe()
    except UpstreamError as err:
        return UpstreamError(
            503, f"TF Serving refuses a known-good image too, so not the image's fault: {err}"
        )
    return refusal


def check_bytes_input(inputs: Collection[str] | None, version: int) -> None:
    """Raises a 503 UpstreamError unless the served version's bytes signature (`inputs`: its
    input names, None without the signature) takes encoded images, as an export's does."""
    if inputs is not None and contract.INPUT_IMAGE_BYTES in inputs:
        return
    has = (
        f"has no `{contract.SIGNATURE_IMAGE_BYTES}` signature"
        if inputs is None
        else f"takes {', '.join(f'`{name}`' for name in sorted(inputs)) or 'no input'} in its "
        f"`{contract.SIGNATURE_IMAGE_BYTES}` signature, not `{contract.INPUT_IMAGE_BYTES}`"
    )
    raise UpstreamError(
        503,
        f"Version {version} served by TF Serving is not a tf-alexnet export: it {has}. "
        "Serve what `tf-alexnet export` writes.",
    )


def none_available(statuses: list[tuple[int, str, str]]) -> str:
    """Why TF Serving serves no version, from its model status: (version, state, error)."""
    if not statuses:
        return "TF Serving lists no version of the model."
    listed = "; ".join(
        f"version {version} is {state}" + (f" ({error})" if error else "")
        for version, state, error in statuses
    )
    return f"TF Serving has no version of the model available: {listed}."


def error_response(status: int, message: str) -> JSONResponse:
    """An answer in the shape of `schemas.ErrorBody`, as FastAPI's own HTTPExceptions have."""
    return JSONResponse({"detail": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """A parameter out of range is one sentence, as every refusal; a bug is never a client's
    mistake, but its answer is still JSON (traceback in the log)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, invalid_parameter(request, exc.errors()[0]))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:  # Starlette names the first route's methods alone
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)  # `middleware.BugAnswer` answers first, as a rule
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc)


def shutdown_error() -> JSONResponse:
    """The answer to a request that uvicorn cancels `SHUTDOWN_TIMEOUT_S` after SIGTERM."""
    return error_response(503, "The server shut down before the request ended.")


def internal_error(exc: Exception) -> JSONResponse:
    """The 500 of a bug: its exception's type, never its message (which may say anything)."""
    return error_response(500, f"Internal server error ({type(exc).__name__}).")


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def as_it_came(scope: Scope) -> Scope:
    """`scope` with the root_path it arrived with: a mount that routed it rewrote root_path
    (keeping the original in app_root_path), and routes no longer match it as it came."""
    return {**scope, "root_path": scope.get("app_root_path", scope.get("root_path", ""))}


def allowed_methods(request: Request) -> list[str]:
    """The methods some route takes at the request's path (GET and HEAD are two routes here),
    found by asking the routes as the router does."""
    scope = as_it_came(request.scope)
    routes = request.app.router.routes
    if any(isinstance(r, Mount) and r.matches(scope)[0] == Match.FULL for r in routes):
        return ["GET", "HEAD"]  # the API pages' files (StaticFiles), whatever the method
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    ]


ECHO_CHARS = 40
"""At most this much of a client's value is said back in an error."""


def clipped(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` cut to `limit` characters, the cut marked "..." (a 5,000-digit `top_k` came
    back whole)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_parameter(request: Request, error: dict[str, Any]) -> str:
    """FastAPI's 422 has a list of pydantic errors as its detail: this says in one sentence
    which parameter, what it should be (an integer parameter: its whole range) and what came."""
    where, name = error["loc"][0], error["loc"][-1]
    # pydantic's messages name their subject first: "Input should be ...", "String should
    # have at most 1024 characters": the parameter is the subject here.
    stated = re.fullmatch(r"\w+ (should\b.*)", error["msg"], re.DOTALL)
    should = stated[1] if stated else f"should be valid ({error['msg']})"
    dependant = getattr(request.scope.get("route"), "dependant", None)
    for field in getattr(dependant, f"{where}_params", []):
        if field.alias != name or field.field_info.annotation is not int:
            continue
        rules = field.field_info.metadata  # annotated_types' Ge(ge=1), Le(le=10)...
        bounds = {
            key: getattr(rule, key) for rule in rules for key in ("ge", "le") if hasattr(rule, key)
        }
        if len(bounds) == 2:
            should = f"should be an integer from {bounds['ge']} to {bounds['le']}"
    received = clipped(repr(error.get("input")))
    return f"{where.capitalize()} parameter {name} {should}. Received: {name}={received}."
