"""Reading a request's images: multipart `file` parts, TF Serving's `{"instances": [{"b64"}]}`,
or one image as the whole body (`Content-Type: image/*`).

The body is read in chunks under `MAX_BODY_BYTES` whatever its headers say; every malformed body
(bad multipart, deep or invalid JSON, bad base64, too many files) is a 4xx with a message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json

from fastapi import HTTPException, Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tf_alexnet_serving.settings import Settings

PREDICT_BODY = {  # the OpenAPI request body of POST /predict (FastAPI cannot infer it)
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
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def read_images(request: Request, settings: Settings) -> list[tuple[str, bytes]]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _limited_body(request, settings.max_body_bytes, settings.body_timeout_s)
    if media_type == "multipart/form-data":
        return await _multipart_images(request, body, settings)
    if media_type == "application/json":
        return _json_images(body, settings)
    if media_type.startswith("image/"):  # one image, no envelope: the cheapest to parse
        return [(request.query_params.get("filename") or "body", body)]
    raise HTTPException(
        415,
        "Send multipart/form-data with image files, application/json with instances, or one "
        "image as the body (Content-Type: image/png, image/jpeg, ...).",
    )


async def _limited_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, read in chunks; 413 past `limit` even without a Content-Length header, 408
    unless it has all come within `timeout_s`."""
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"Request body over {limit:,} bytes.")
                chunks.append(chunk)
    except TimeoutError:  # the rest of the body may still come: answer, then close
        raise HTTPException(
            408, f"The whole body did not arrive within {timeout_s:g} s.", {"Connection": "close"}
        ) from None
    except ClientDisconnect:  # no one to answer: 499 in the log and metrics, as nginx has it
        raise HTTPException(499, "The client closed the connection during the upload.") from None
    body = b"".join(chunks)
    request._body = body  # let request.form()/json() reuse what was read
    return body


async def _multipart_images(
    request: Request, body: bytes, settings: Settings
) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=settings.max_files, max_fields=settings.max_files)
    except StarletteHTTPException as err:  # Starlette's own: too many files or fields, no boundary
        raise HTTPException(err.status_code, err.detail) from None
    except Exception as err:
        raise HTTPException(400, f"Malformed multipart body: {err}") from None
    if not _closed(body, request.headers["content-type"]):
        raise HTTPException(
            400,
            "Malformed multipart body: it ends before its closing boundary (was the upload cut "
            "short?).",
        )
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise HTTPException(400, "No image file in the request (send it as -F file=@image.png).")
    if len(files) > settings.max_files:
        raise HTTPException(400, f"Too many files: at most {settings.max_files} per request.")
    return [(upload.filename or f"file{i}", await upload.read()) for i, upload in enumerate(files)]


def _closed(body: bytes, content_type: str) -> bool:
    """Whether the body holds its closing delimiter (`--BOUNDARY--`). Without one, the form
    parser silently drops the part it was in: a cut-off upload would be answered in part."""
    boundary = parse_options_header(content_type)[1][b"boundary"]  # the form parser found it
    return b"--" + boundary + b"--" in body


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
