"""Route dependencies: the backend, the settings, the API key (a declared security scheme)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from tf_alexnet_serving.backends import Backend
from tf_alexnet_serving.settings import Settings

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,  # a missing key is our 401 (with our message), and only if API_KEY is set
    description="Required when the server sets TF_ALEXNET_SERVE_API_KEY.",
)


def settings_of(request: Request) -> Settings:
    """The app's settings (a plain call: /predict's hot path solves no dependency for it)."""
    settings: Settings = request.app.state.settings
    return settings


def backend_of(request: Request) -> Backend:
    """The app's backend (a plain call, as `settings_of`)."""
    backend: Backend = request.app.state.backend
    return backend


# Every dependency is `async def`: FastAPI runs a plain `def` one in a worker thread, a thread
# hop per dependency per request.


async def get_backend(request: Request) -> Backend:
    return backend_of(request)


BackendDep = Annotated[Backend, Depends(get_backend)]


async def require_api_key(
    request: Request, key: Annotated[str | None, Security(API_KEY_HEADER)]
) -> None:
    """401 unless `X-API-Key` equals the configured key (compared in constant time)."""
    settings = settings_of(request)
    if settings.api_key and not secrets.compare_digest(
        (key or "").encode(), settings.api_key.encode()
    ):  # constant time: the comparison does not reveal how much of a guess is right
        raise HTTPException(
            401,
            "Missing or wrong API key (header X-API-Key).",
            {"WWW-Authenticate": 'ApiKey header="X-API-Key"'},  # a 401 names its scheme
        )
