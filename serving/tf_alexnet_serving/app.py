"""The FastAPI app factory: routes, limits, errors, metrics."""

# No `from __future__ import annotations` here: FastAPI reads these annotations at runtime,
# and some refer to names local to `create_app`.

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import pathlib
import re
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile

from tf_alexnet_serving.backends import Backend, LocalBackend
from tf_alexnet_serving.classes import ClassNames
from tf_alexnet_serving.images import ImageError, check_image
from tf_alexnet_serving.metrics import Metrics
from tf_alexnet_serving.settings import Settings, get_settings
from tf_alexnet_serving.tfserving_grpc import GrpcBackend
from tf_alexnet_serving.tfserving_rest import RestBackend, UpstreamError

PAGE = pathlib.Path(__file__).with_name("page.html")
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""A client's X-Request-ID is kept when it looks like an id (a UUID, a trace id), else replaced."""


def _request_logger() -> logging.Logger:
    """`tf_alexnet_serving.requests`: one JSON line per request on stderr (unless configured)."""
    logger = logging.getLogger("tf_alexnet_serving.requests")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def create_app(settings: Settings | None = None) -> FastAPI:
    """The facade over the backend that `settings` (default: the environment) selects."""
    settings = settings or get_settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend: Backend
        kind = settings.resolved_backend()
        if kind == "tfserving-rest":
            backend = RestBackend(settings)
        elif kind == "tfserving-grpc":
            backend = GrpcBackend(settings)
        else:
            backend = LocalBackend(
                settings,
                on_batch=metrics.batch_size.observe,
                on_latency=metrics.backend_latency.observe,
            )
        await backend.start()
        if backend.names.problem:  # serve /readyz and the reason, but never a wrong label
            logging.getLogger("tf_alexnet_serving").error("Not ready: %s", backend.names.problem)
        app.state.backend = backend
        yield
        await backend.stop()

    app = FastAPI(
        title="tf_alexnet",
        summary="AlexNet image classification (Fashion-MNIST classes by default).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )

    request_log = _request_logger() if settings.request_log else None

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
                response: Response = _error(
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

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, never a client's mistake: still JSON (the traceback goes to the server log).
        return _error(500, f"Internal server error ({type(exc).__name__}).")

    def backend(request: Request) -> Backend:
        backend: Backend = request.app.state.backend
        return backend

    def api_key(request: Request) -> None:
        if settings.api_key and not secrets.compare_digest(
            request.headers.get("x-api-key", "").encode(), settings.api_key.encode()
        ):  # constant time: the comparison does not reveal how much of a guess is right
            raise HTTPException(401, "Missing or wrong API key (header X-API-Key).")

    BackendDep = Annotated[Backend, Depends(backend)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE.read_text()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(model: BackendDep) -> JSONResponse:
        """Readiness: the backend reports the model available, with the class names it has."""
        available = await model.ready()
        if model.names.problem:
            return _error(503, model.names.problem)
        if available:
            return JSONResponse({"status": "ready", "model": model.name, "version": model.version})
        return _error(503, "The model is not available.")

    @app.get("/v1/metadata", dependencies=[Depends(api_key)])
    async def metadata(model: BackendDep) -> dict[str, Any]:
        """The served model: name, version, class names, input spec."""
        return model.metadata()

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict", dependencies=[Depends(api_key)], openapi_extra=PREDICT_BODY)
    async def predict(
        request: Request,
        model: BackendDep,
        top_k: Annotated[int, Query(ge=1, le=settings.max_top_k)] = 5,
    ) -> dict[str, Any]:
        """Classify images: multipart `file` parts, or `{"instances": [{"b64": ...}]}`."""
        start = time.perf_counter()
        if model.names.problem:  # refuse rather than label with names the model does not have
            raise HTTPException(503, model.names.problem)
        images = await _read_images(request, settings)
        request.state.images = len(images)
        for name, data in images:
            try:
                check_image(data, settings.max_pixels)
            except ImageError as err:
                raise HTTPException(400, f"{name}: {err}") from None
        results = await asyncio.gather(
            *(model.predict(data) for _, data in images), return_exceptions=True
        )
        if model.names.problem:  # learnt from these very answers
            raise HTTPException(503, model.names.problem)
        for result in results:
            if isinstance(result, UpstreamError) and result.status != 400:
                headers = {"Retry-After": str(result.retry_after)} if result.retry_after else None
                raise HTTPException(result.status, result.message, headers=headers)
        failed = [
            name
            for (name, _), result in zip(images, results, strict=True)
            if isinstance(result, Exception)
        ]
        if failed:  # the whole request fails, naming every bad image
            raise HTTPException(400, f"{', '.join(failed)}: corrupt or truncated image")
        predictions = [
            _answer(name, result, model.names, top_k)
            for (name, _), result in zip(images, results, strict=True)
        ]
        return {
            "model": {"name": model.name, "version": model.version},
            "predictions": predictions,
            "server_time_ms": round((time.perf_counter() - start) * 1000, 3),
        }

    return app


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "instances": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"b64": {"type": "string"}},
                                "required": ["b64"],
                            },
                        }
                    },
                    "required": ["instances"],
                },
                "example": {"instances": [{"b64": "iVBORw0KGgo..."}]},
            },
        },
    }
}


def _answer(name: str, probabilities: Any, names: ClassNames, top_k: int) -> dict[str, Any]:
    order = (-probabilities).argsort(kind="stable")[:top_k]  # ties: the lowest id, as argmax
    top = [
        {"class_id": int(i), "class_name": names.name(int(i)), "score": float(probabilities[i])}
        for i in order
    ]
    return {"file": name, **top[0], "top_k": top}


async def _read_images(request: Request, settings: Settings) -> list[tuple[str, bytes]]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _limited_body(request, settings.max_body_bytes)
    if media_type == "multipart/form-data":
        return await _multipart_images(request, body, settings)
    if media_type == "application/json":
        return _json_images(body, settings)
    raise HTTPException(
        415, "Send multipart/form-data with image files, or application/json with instances."
    )


async def _limited_body(request: Request, limit: int) -> bytes:
    """The body, read in chunks; 413 past `limit` even without a Content-Length header."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"Request body over {limit:,} bytes.")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # let request.form()/json() reuse what was read
    return body


async def _multipart_images(
    request: Request, body: bytes, settings: Settings
) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=settings.max_files, max_fields=settings.max_files)
    except HTTPException:
        raise
    except Exception as err:
        raise HTTPException(400, f"Malformed multipart body: {err}") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise HTTPException(400, "No image file in the request (send it as -F file=@image.png).")
    if len(files) > settings.max_files:
        raise HTTPException(400, f"Too many files: at most {settings.max_files} per request.")
    return [(upload.filename or f"file{i}", await upload.read()) for i, upload in enumerate(files)]


def _json_images(body: bytes, settings: Settings) -> list[tuple[str, bytes]]:
    try:
        payload = json.loads(body)
    except RecursionError:  # e.g. 100,000 nested arrays: the decoder recurses per level
        raise HTTPException(400, "The body is JSON nested too deeply.") from None
    except ValueError:  # also invalid UTF-8 and integers over Python's 4,300-digit limit
        raise HTTPException(400, "The body is not valid JSON.") from None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise HTTPException(400, 'Expected {"instances": [{"b64": "<base64 image>"}, ...]}.')
    if len(instances) > settings.max_files:
        raise HTTPException(400, f"Too many instances: at most {settings.max_files} per request.")
    images = []
    for i, instance in enumerate(instances):
        if (
            not isinstance(instance, dict)
            or set(instance) != {"b64"}
            or not isinstance(instance["b64"], str)
        ):
            raise HTTPException(400, f'instances[{i}]: expected {{"b64": "<base64 image>"}}.')
        try:
            images.append((f"instances[{i}]", base64.b64decode(instance["b64"], validate=True)))
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"instances[{i}]: invalid base64.") from None
    return images


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)
