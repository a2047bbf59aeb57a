"""The routes: the page, health and readiness, model metadata, Prometheus metrics, /predict."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime, and the
# `top_k` bound is local to `build_router`.

import asyncio
import pathlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from tf_alexnet.image_header import ImageError, check_image
from tf_alexnet_serving.backends import Backend
from tf_alexnet_serving.classes import Answer, ClassNames
from tf_alexnet_serving.deps import BackendDep, backend_of, require_api_key, settings_of
from tf_alexnet_serving.errors import ECHO_CHARS, UpstreamError, clipped, error_response
from tf_alexnet_serving.inputs import UploadBudget, predict_body, read_images
from tf_alexnet_serving.schemas import (
    Health,
    Metadata,
    ModelRef,
    Prediction,
    PredictResponse,
    Ready,
    TopClass,
    errors,
)
from tf_alexnet_serving.settings import Settings

UNDECODABLE = (
    "could not be decoded: corrupt, truncated, or a variant TensorFlow's decoder does not read "
    "(such as 1-bit BMP)"
)
"""The model refused the image (its header looked right): the decoder does not say why."""
PAGE = pathlib.Path(__file__).with_name("page.html")
PAGE_TOP_K = 10
"""The page lists the 10 best classes, or `MAX_TOP_K` when it is lower."""


def digits_only(value: object) -> object:
    """A query integer written in decimal digits alone: pydantic's lax mode read `1.0`,
    `2.000`, ` 3 `, `+3` and `1_0` (as 10) as integers, so a client's float or typo was
    answered as if it had asked for something else."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("int_parsing", "Input should be a valid integer")
    return value


def build_router(max_top_k: int, max_files: int) -> APIRouter:
    """The facade's routes; `top_k` is validated up to `max_top_k` (422 past it), and the
    schema says a request holds at most `max_files` images."""
    router = APIRouter()

    # /predict first: a request is matched against the routes in order, and it is the busy one.
    @router.post(
        "/predict",
        dependencies=[Depends(require_api_key)],
        openapi_extra=predict_body(max_files),
        response_model=PredictResponse,
        responses=errors(400, 401, 408, 413, 415, 422, 500, 503, 504),
    )
    async def predict(
        request: Request,
        top_k: Annotated[int, Query(ge=1, le=max_top_k), BeforeValidator(digits_only)] = 5,
        filename: Annotated[
            str | None,
            Query(
                max_length=1024,
                description="With one image as the whole body: the name its answer reports "
                '(default "body").',
            ),
        ] = None,
    ) -> Response:
        """Classify images: multipart `file` parts, `{"instances": [{"b64": ...}]}`, or one
        image as the whole body (`Content-Type: image/png`, `image/jpeg`, ...)."""
        start = time.perf_counter()
        _check_query(request)
        model, settings = backend_of(request), settings_of(request)
        if model.names.problem:  # refuse rather than label with names the model does not have
            raise HTTPException(503, model.names.problem)
        uploads = request.app.state.uploads
        try:
            answer = await _classify(request, model, settings, uploads, top_k, filename, start)
        finally:  # the images and the body are let go with the answer
            uploads.release(request)
        # Built and validated in `_classify`: serialized once here, not validated again.
        return Response(answer.model_dump_json(), media_type="application/json")

    # UTF-8 whatever the locale's encoding: the page is not ASCII.
    page_html = PAGE.read_text(encoding="utf-8").replace(
        "{{TOP_K}}", str(min(PAGE_TOP_K, max_top_k))
    )

    # Probes may ask with HEAD (curl -I, load balancers): the GET answer, without its body. Not
    # in the OpenAPI document, where it would repeat the GET operation under the same id.
    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    @router.head("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return page_html

    @router.get("/healthz")
    @router.head("/healthz", include_in_schema=False)
    async def healthz() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @router.get("/readyz", response_model=Ready, responses=errors(503))
    @router.head("/readyz", include_in_schema=False)
    async def readyz(model: BackendDep) -> JSONResponse:
        """Readiness: the backend reports the model available, with the class names it has."""
        problem = await _not_ready(model)
        if problem:
            return error_response(503, problem)
        ready = Ready(status="ready", model=model.name, version=model.version)
        return JSONResponse(ready.model_dump())

    @router.get(
        "/v1/metadata",
        dependencies=[Depends(require_api_key)],
        response_model=Metadata,
        responses=errors(401, 503),
    )
    @router.head("/v1/metadata", dependencies=[Depends(require_api_key)], include_in_schema=False)
    async def metadata(model: BackendDep) -> Response:
        """The served model: name, version, class names, input spec (503 when not ready:
        TF Serving's model may have changed, or be gone)."""
        problem = await _not_ready(model)
        if problem:
            return error_response(503, problem)
        return JSONResponse(Metadata(**model.metadata()).model_dump(mode="json"))

    @router.get("/metrics", include_in_schema=False)
    @router.head("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        registry = request.app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


PREDICT_QUERY = ("top_k", "filename")
"""The query parameters /predict takes."""


def _check_query(request: Request) -> None:
    """422 for a query parameter /predict does not take (`?topk=3`, a typo, was ignored and
    the answer had the default 5 classes) or one given twice (`?top_k=2&top_k=3` was
    answered for the last, silently)."""
    names = [name for name, _ in request.query_params.multi_items()]
    for name in dict.fromkeys(names):
        shown = name if name.isidentifier() and len(name) <= ECHO_CHARS else _shown(name)
        if name not in PREDICT_QUERY:
            raise HTTPException(
                422,
                f"Query parameter {shown} is not one that /predict takes "
                f"({', '.join(PREDICT_QUERY)}). Received: "
                f"{shown}={_shown(request.query_params[name])}.",
            )
        if names.count(name) > 1:
            values = ", ".join(_shown(v) for v in request.query_params.getlist(name)[:4])
            raise HTTPException(
                422, f"Query parameter {shown} should be given once. Received: {shown}={values}."
            )


def _shown(text: str) -> str:
    """A client's parameter name or value as said back: quoted, clipped."""
    return clipped(repr(text))


async def _not_ready(model: Backend) -> str:
    """Why the model cannot answer now ("" when it can), asking the backend afresh."""
    available = await model.ready()
    if model.names.problem:
        return model.names.problem
    if available:
        return ""
    reason = model.unavailable_reason
    return f"The model is not available: {reason}" if reason else "The model is not available."


async def _classify(
    request: Request,
    model: Backend,
    settings: Settings,
    uploads: UploadBudget,
    top_k: int,
    filename: str | None,
    start: float,
) -> PredictResponse:
    """The answer to a /predict request, or the HTTPException that says why there is none."""
    images = await read_images(request, settings, uploads, filename)
    request.state.images = len(images)
    decodable, refused = [], []  # what the backend decodes (an animated GIF's first frame)
    for name, data in images:
        try:
            decodable.append(check_image(data, settings.max_pixels))
        except ImageError as err:
            refused.append(f"{name}: {err}")
    if refused:  # every bad image named, not only the first
        raise HTTPException(400, "; ".join(refused))
    results = await _predict_one_version(model, decodable)
    answers = [result for result in results if isinstance(result, Answer)]
    names = answers[0].names if answers else model.names
    if names.problem:  # learnt from these very answers
        raise HTTPException(503, names.problem)
    for result in results:
        if isinstance(result, UpstreamError) and result.status != 400:
            headers = {"Retry-After": str(result.retry_after)} if result.retry_after else None
            raise HTTPException(result.status, result.message, headers=headers)
        if isinstance(result, Exception) and not isinstance(result, UpstreamError):
            raise result  # a bug, not the image's fault: a 500, its traceback in the log
    failed = [  # each image the model refused (UpstreamError 400)
        name
        for (name, _), result in zip(images, results, strict=True)
        if isinstance(result, UpstreamError)
    ]
    if failed:  # the whole request fails, naming every bad image
        raise HTTPException(400, f"{', '.join(failed)}: {UNDECODABLE}")
    request.state.model_version = answers[0].version
    return PredictResponse(
        model=ModelRef(name=model.name, version=answers[0].version),
        predictions=[
            _prediction(name, result.probabilities, names, top_k)
            for (name, _), result in zip(images, answers, strict=True)
        ],
        server_time_ms=round((time.perf_counter() - start) * 1000, 3),
    )


async def _predict_one_version(model: Backend, images: list[bytes]) -> list[Any]:
    """`_predict_all`, with every answer from one model version. A new version swapped in
    between a request's images means asking again, once: all of them go to the new one."""
    for _ in range(2):
        results = await _predict_all(model, images)
        if len({r.version for r in results if isinstance(r, Answer)}) <= 1:
            return results
    raise HTTPException(
        503, "The model changed version during the request; retry.", headers={"Retry-After": "1"}
    )


async def _predict_all(model: Backend, images: list[bytes]) -> list[Any]:
    """One result or exception per image (one image, the usual case: no tasks to gather)."""
    if len(images) == 1:
        try:
            return [await model.predict(images[0])]
        except Exception as err:
            return [err]
    group = object()  # the request's images take turns with other requests' (`Backend.predict`)
    return await asyncio.gather(
        *(model.predict(data, group) for data in images), return_exceptions=True
    )


def _prediction(name: str, probabilities: Any, names: ClassNames, top_k: int) -> Prediction:
    scores = probabilities.tolist()  # Python floats: a few of them sort faster than numpy's
    # A stable sort: ties go to the lowest class id, as argmax.
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_k]
    top = [TopClass(class_id=i, class_name=names.name(i), score=scores[i]) for i in order]
    best = top[0]
    return Prediction(
        file=name,
        class_id=best.class_id,
        class_name=best.class_name,
        score=best.score,
        top_k=top,
    )
