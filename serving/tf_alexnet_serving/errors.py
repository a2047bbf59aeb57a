"""The facade's errors: one JSON shape for every refusal, `{"detail": "<message>"}`."""

from __future__ import annotations

from fastapi import FastAPI, Request
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
    """A bug is never a client's mistake, but its answer is still JSON (traceback in the log)."""

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"Internal server error ({type(exc).__name__}).")
