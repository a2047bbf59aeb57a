"""The FastAPI app factory: routes, limits, errors, metrics."""

# No `from __future__ import annotations` here: FastAPI reads these annotations at runtime,
# and some refer to names local to `create_app`.

import asyncio
import base64
import binascii
import contextlib
import pathlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile

from tf_alexnet.predictions import decode_predictions
from tf_alexnet_serving.backends import Backend, LocalBackend
from tf_alexnet_serving.images import ImageError, check_image
from tf_alexnet_serving.metrics import Metrics
from tf_alexnet_serving.settings import Settings, get_settings
from tf_alexnet_serving.tfserving_grpc import GrpcBackend
from tf_alexnet_serving.tfserving_rest import RestBackend, UpstreamError

PAGE = pathlib.Path(__file__).with_name("page.html")


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
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"])

    @app.middleware("http")
    async def limit_and_measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            response: Response = _error(
                413, f"Request body over {settings.max_body_bytes:,} bytes."
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - start)
        return response

    def backend(request: Request) -> Backend:
        backend: Backend = request.app.state.backend
        return backend

    def api_key(request: Request) -> None:
        if settings.api_key and request.headers.get("x-api-key") != settings.api_key:
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
        """Readiness: the backend reports the model available."""
        if await model.ready():
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
        images = await _read_images(request, settings)
        for name, data in images:
            try:
                check_image(data, settings.max_pixels)
            except ImageError as err:
                raise HTTPException(400, f"{name}: {err}") from None
        results = await asyncio.gather(
            *(model.predict(data) for _, data in images), return_exceptions=True
        )
        for result in results:
            if isinstance(result, UpstreamError) and result.status != 400:
                raise HTTPException(result.status, result.message)
        failed = [
            name
            for (name, _), result in zip(images, results, strict=True)
            if isinstance(result, Exception)
        ]
        if failed:  # the whole request fails, naming every bad image
            raise HTTPException(400, f"{', '.join(failed)}: corrupt or truncated image")
        predictions = [
            _answer(name, result, model.class_names, top_k)
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


def _answer(
    name: str, probabilities: Any, class_names: tuple[str, ...], top_k: int
) -> dict[str, Any]:
    (best,) = decode_predictions([probabilities], top_k, class_names)
    top = [{"class_id": i, "class_name": n, "score": score} for i, n, score in best]
    return {"file": name, **top[0], "top_k": top}


async def _read_images(request: Request, settings: Settings) -> list[tuple[str, bytes]]:
    content_type = request.headers.get("content-type", "")
    body = await _limited_body(request, settings.max_body_bytes)
    if content_type.startswith("multipart/form-data"):
        return await _multipart_images(request, body, settings)
    if content_type.startswith("application/json"):
        return _json_images(request, body, settings)
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


def _json_images(request: Request, body: bytes, settings: Settings) -> list[tuple[str, bytes]]:
    import json

    try:
        payload = json.loads(body)
    except ValueError:
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
