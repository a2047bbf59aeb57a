"""The FastAPI app factory: settings, the backend's lifespan, middleware, errors and routes.

- `settings.py`: every knob (`TF_ALEXNET_SERVE_*`); `deps.py`: what routes depend on;
- `routes.py`: the endpoints; `schemas.py`: their answers and error bodies; `inputs.py`:
  reading a request's images; `images.py`: the header check; `errors.py`: one error shape;
- `backends.py`: the interface and factory over `local.py`, `tfserving_rest.py` and
  `tfserving_grpc.py`; `batching.py`: the local micro-batcher; `classes.py`: class names;
- `heap.py`: the garbage collector kept off what lives as long as the server;
- `middleware.py`: the body-size gate, CORS, request ids, metrics, the request log and a bug's 500;
  `metrics.py`: Prometheus;
- `protocol.py`: uvicorn's HTTP protocol with header timeouts and size and connection limits
  (its refusals are counted and logged as the app's requests are).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from tf_alexnet import __version__
from tf_alexnet_serving.backends import Backend, make_backend
from tf_alexnet_serving.errors import install_error_handlers
from tf_alexnet_serving.heap import freeze_long_lived, thaw
from tf_alexnet_serving.inputs import UploadBudget
from tf_alexnet_serving.metrics import Metrics
from tf_alexnet_serving.middleware import install_request_middleware
from tf_alexnet_serving.routes import build_router
from tf_alexnet_serving.settings import Settings, get_settings, unknown_variables

DOCS_ASSETS = "/docs-assets"
"""Where the API pages' scripts, stylesheet and icon are served from."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The facade over the backend that `settings` (default: the environment) selects."""
    settings = settings or get_settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for warning in unknown_variables():
            logging.getLogger("tf_alexnet_serving.settings").warning(warning)
        backend = make_backend(
            settings,
            on_batch=metrics.batch_size.observe,
            on_latency=metrics.backend_latency.observe,
        )
        await backend.start()  # a wrong CLASS_NAMES is logged as found (`ClassNames.problem`)
        metrics.model_version.set_function(lambda: backend.version)
        metrics.model_ready.set_function(lambda: last_found_ready(backend))
        app.state.backend = backend
        freeze_long_lived()  # the model, TensorFlow, the app: out of every collection's way
        try:
            yield
        finally:
            thaw()
            await backend.stop()

    # /docs and /redoc load Swagger UI and ReDoc from the facade itself: from a CDN (FastAPI's
    # default) they were blank pages wherever the browser has no internet.
    app = FastAPIOffline(
        title="tf_alexnet",
        summary="AlexNet image classification (Fashion-MNIST classes by default).",
        version=__version__,  # the package's, not FastAPI's default "0.1.0"
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    # POST /predict/ is a 404 in JSON, not a 307 to an address built from the Host header.
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.uploads = UploadBudget(settings.max_upload_bytes)
    install_request_middleware(app, settings, metrics)  # and CORS, when CORS_ORIGINS is set
    install_error_handlers(app)
    app.include_router(build_router(settings.max_top_k, settings.max_files))
    answer_head_where_get(app)
    return app


def last_found_ready(backend: Backend) -> bool:
    """Whether the backend's last check (its watcher's, or a request's) found the model ready,
    asking nothing: with TF Serving down, `tf_alexnet_model_version` still gave the version
    last served, and no metric said the model was gone."""
    return bool(backend.version) and not backend.unavailable_reason and not backend.names.problem


def answer_head_where_get(app: FastAPI) -> None:
    """HEAD on every page that answers GET outside the OpenAPI document (/docs, /redoc, the
    OAuth2 redirect page): FastAPI's routes take only the methods they name, so `curl -I
    /docs` was a 405 although HEAD is a method every GET resource takes (RFC 9110 9.1). The
    documented routes have their own HEAD route (`routes.py`): adding HEAD to their GET
    operation would put a second operation in the document."""
    for route in app.router.routes:
        if not isinstance(route, APIRoute) or route.include_in_schema:
            continue
        methods = route.methods or set()
        if "GET" in methods:
            route.methods = methods | {"HEAD"}
