"""The facade's errors: one JSON shape for every refusal, `{"detail": "<message>"}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class UpstreamError(Exception):
    """The backend failed; `status` is what the facade answers (with `Retry-After` if set)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def error_response(status: int, message: str) -> JSONResponse:
    """An answer in the shape of `schemas.ErrorBody`, as FastAPI's own HTTPExceptions have."""
    return JSONResponse({"detail": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """A parameter out of range is one sentence, as every refusal; a bug is never a client's
    mistake, but its answer is still JSON (traceback in the log)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, invalid_parameter(request, exc.errors()[0]))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"Internal server error ({type(exc).__name__}).")


def invalid_parameter(request: Request, error: dict[str, Any]) -> str:
    """FastAPI's 422 has a list of pydantic errors as its detail: this says in one sentence
    which parameter, what it should be (an integer parameter: its whole range) and what came."""
    where, name = error["loc"][0], error["loc"][-1]
    expected = error["msg"].removeprefix("Input should be ")
    dependant = getattr(request.scope.get("route"), "dependant", None)
    for field in getattr(dependant, f"{where}_params", []):
        if field.alias != name or field.field_info.annotation is not int:
            continue
        rules = field.field_info.metadata  # annotated_types' Ge(ge=1), Le(le=10)...
        bounds = {
            key: getattr(rule, key) for rule in rules for key in ("ge", "le") if hasattr(rule, key)
        }
        if len(bounds) == 2:
            expected = f"an integer from {bounds['ge']} to {bounds['le']}"
    return (
        f"{where.capitalize()} parameter {name} should be {expected}. "
        f"Received: {name}={error.get('input')!r}."
    )
