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
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import (
    DEFAULT_MAX_HEADER_COUNT,
    DEFAULT_MAX_HEADER_SIZE,
    parse_options_header,
)
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tf_alexnet import contract
from tf_alexnet_serving.errors import clipped
from tf_alexnet_serving.settings import Settings

EXAMPLE_PNG = (  # a black 28x28 PNG: the API page's "Try it out" sends it as it is
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAEElEQVR42mNgGAWjYBQQAwADLAAB1wvpfAAAAABJRU5ErkJggg=="
)
B64 = {
    "type": "object",
    "properties": {"b64": {"type": "string"}},
    "required": ["b64"],
    "additionalProperties": False,
}
"""One base64 image, as TF Serving's JSON takes binary values."""


JSON_KEYS = ("instances", "signature_name")
"""What a JSON body holds: TF Serving's row format, with the one signature the facade serves."""
QUERY_ONLY = ("top_k",)
"""Query parameters that a client may put in the body instead (a JSON key, or a form field):
they were ignored there, and the answer was for the default."""


def predict_body(max_files: int) -> dict[str, object]:
    """The OpenAPI request body of POST /predict (FastAPI cannot infer it)."""
    named = {  # TF Serving's row format with the input named
        "type": "object",
        "properties": {contract.INPUT_IMAGE_BYTES: B64},
        "required": [contract.INPUT_IMAGE_BYTES],
        "additionalProperties": False,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "minItems": 1,
                                "maxItems": max_files,
                                "description": "Image files (any field name is read).",
                            }
                        },
                        "required": ["file"],
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "signature_name": {
                                "type": "string",
                                "enum": ["", contract.SIGNATURE_IMAGE_BYTES],
                                "description": "As in TF Serving's REST API; the facade serves "
                                "this signature alone (the default).",
                            },
                            "instances": {
                                "type": "array",
                                "items": {"oneOf": [B64, named]},
                                "minItems": 1,
                                "maxItems": max_files,
                            },
                        },
                        "required": ["instances"],
                        "additionalProperties": False,
                    },
                    "example": {"instances": [{"b64": EXAMPLE_PNG}]},
                },
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


class UploadBudget:
    """The bytes of request bodies held at once, across requests (`MAX_UPLOAD_BYTES`).

    Each request's body is held while it is parsed, checked and predicted; 150 uploads of 10 MB
    at once took the server to 7 GB. A body that would take the total past the limit is refused
    with 503 as it arrives. Only the event loop calls it: no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, request: Request, size: int) -> None:
        if self.held + size > self.limit:
            raise HTTPException(
                503,
                f"Overloaded: {self.held:,} bytes of uploads in progress; retry later.",
                {"Retry-After": "1", "Connection": "close"},
            )
        self.held += size
        request.state.upload_bytes = getattr(request.state, "upload_bytes", 0) + size

    def release(self, request: Request) -> None:
        """Gives back what `request` took (call when its answer is ready)."""
        self.held -= getattr(request.state, "upload_bytes", 0)
        request.state.upload_bytes = 0


async def read_images(
    request: Request, settings: Settings, budget: UploadBudget, filename: str | None = None
) -> list[tuple[str, bytes]]:
    """The request's (name, bytes) images; its body counts against `budget` until released.
    `filename` names an image sent as the whole body (default "body").
    A body the facade cannot read (its media type, or a content coding) is refused from the
    headers, before a byte of it is read (nor is `100 Continue` sent)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("multipart/form-data", "application/json") and not (
        media_type.startswith("image/")
    ):
        raise HTTPException(
            415,
            "Send multipart/form-data with image files, application/json with instances, or "
            "one image as the body (Content-Type: image/png, image/jpeg, ...).",
        )
    if filename is not None and not media_type.startswith("image/"):
        # It names an image sent as the whole body: with parts or instances it was ignored.
        where = "its filename=" if media_type == "multipart/form-data" else "instances[N]"
        raise HTTPException(
            422,
            "Query parameter filename names one image sent as the whole body (Content-Type: "
            f"image/png, ...); an image of a {media_type} body is named by {where}. "
            f"Received: filename={clipped(repr(filename))}.",
        )
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        raise HTTPException(
            415, f"Content-Encoding {coding} is not supported; send the body uncompressed."
        )
    # The HTTP parser undoes `chunked` alone: another transfer coding reached the image reader
    # still applied, and was refused as an unknown image format.
    transfer = request.headers.get("transfer-encoding", "")
    codings = [part.strip().lower() for part in transfer.split(",") if part.strip()]
    if any(coding not in ("chunked", "identity") for coding in codings):
        raise HTTPException(
            415,
            f"Transfer-Encoding {transfer.strip()} is not supported; send the body "
            "uncompressed (chunked alone, or with a Content-Length).",
        )
    body = await _limited_body(request, settings, budget)
    if media_type == "multipart/form-data":
        return await _multipart_images(request, body, settings)
    if media_type == "application/json":
        return _json_images(body, settings)
    return [(filename or "body", body)]  # one image, no envelope


async def _limited_body(request: Request, settings: Settings, budget: UploadBudget) -> bytes:
    """The body, read in chunks; 413 past `MAX_BODY_BYTES` even without a Content-Length
    header, 408 unless it has all come within `BODY_TIMEOUT_S`, 503 past `budget`."""
    chunks, size = [], 0
    limit, timeout_s = settings.max_body_bytes, settings.body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"Request body over {limit:,} bytes.")
                budget.take(request, len(chunk))
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
        problem = _parser_problem(err)  # its "Invalid multipart data." says nothing of what
        raise HTTPException(
            err.status_code, f"Malformed multipart body: {problem}." if problem else err.detail
        ) from None
    except Exception as err:
        raise HTTPException(400, f"Malformed multipart body: {err}") from None
    if not _closed(body, request.headers["content-type"]):
        raise HTTPException(
            400,
            "Malformed multipart body: it ends before its closing boundary (was the upload cut "
            "short?).",
        )
    for name, value in form.multi_items():
        if name in QUERY_ONLY and isinstance(value, str):
            raise HTTPException(400, _query_only(name, value, "in a form field"))
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        fields = [name for name, _ in form.multi_items()]
        detail = "No image file in the request (send it as -F file=@image.png)."
        if fields:  # a part without a plain `filename` parameter is a text field
            named = ", ".join(field[:40] for field in fields[:5])
            detail = (
                f'No image file in the request: its parts ({named}) have no filename="..." '
                "in their Content-Disposition, so they are text fields (send an image as "
                "-F file=@image.png)."
            )
        raise HTTPException(400, detail)
    if len(files) > settings.max_files:
        raise HTTPException(400, f"Too many files: at most {settings.max_files} per request.")
    return [(upload.filename or f"file{i}", await upload.read()) for i, upload in enumerate(files)]


def _parser_problem(err: BaseException) -> str:
    """What python-multipart found wrong, in words a client can act on; "" if it found
    nothing (Starlette refused the form for another reason)."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, FormParserError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return ""
    message = str(cause)
    if message.startswith("Maximum header size"):
        return f"a part has a header line over {DEFAULT_MAX_HEADER_SIZE:,} bytes"
    if message.startswith("Maximum header count"):
        return f"a part has over {DEFAULT_MAX_HEADER_COUNT} header lines"
    if message.startswith("Expected boundary character"):
        return "it does not begin with the boundary that its Content-Type names"
    return message


def _closed(body: bytes, content_type: str) -> bool:
    """Whether the body's last delimiter (a line `--BOUNDARY`) is the closing one
    (`--BOUNDARY--`). Without it, the form parser silently drops the part it was in: a cut-off
    upload would be answered in part. (`--BOUNDARY--` anywhere in the body passed for it: inside
    an image's bytes, or as a field's value before a part cut short.)"""
    boundary = parse_options_header(content_type)[1][b"boundary"]  # the form parser found it
    delimiter = b"\r\n--" + boundary
    framed = b"\r\n" + body  # the first delimiter opens the body without a line break
    last = framed.rfind(delimiter)
    return last >= 0 and framed[last + len(delimiter) : last + len(delimiter) + 2] == b"--"


def decode_base64(text: str) -> bytes:
    """Standard base64, also with line breaks (MIME's, as `base64.encodebytes` writes) or in
    the URL-safe alphabet with or without its padding; binascii.Error for anything else."""
    text = "".join(text.split())
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
        text += "=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)


class _KeyTwice(Exception):
    """A JSON object gives a key twice (the key)."""


def _once(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object's members as a dict, refusing a key given twice (`json.loads` keeps the
    last: `{"instances": [A], "instances": [B]}` was answered for B alone)."""
    members: dict[str, object] = {}
    for key, value in pairs:
        if key in members:
            raise _KeyTwice(key)
        members[key] = value
    return members


def _json_images(body: bytes, settings: Settings) -> list[tuple[str, bytes]]:
    try:
        payload = json.loads(body, object_pairs_hook=_once)
    except _KeyTwice as err:
        raise HTTPException(
            400, f"The JSON body gives the key {_echo(err.args[0])} twice: give it once."
        ) from None
    except RecursionError:  # e.g. 100,000 nested arrays: the decoder recurses per level
        raise HTTPException(400, "The body is JSON nested too deeply.") from None
    except ValueError:  # also invalid UTF-8 and integers over Python's 4,300-digit limit
        raise HTTPException(400, "The body is not valid JSON.") from None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise HTTPException(400, 'Expected {"instances": [{"b64": "<base64 image>"}, ...]}.')
    _check_json_keys(payload)
    if len(instances) > settings.max_files:
        raise HTTPException(400, f"Too many instances: at most {settings.max_files} per request.")
    images = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and set(instance) == {contract.INPUT_IMAGE_BYTES}:
            instance = instance[contract.INPUT_IMAGE_BYTES]  # the input named, as TF Serving takes
        if (
            not isinstance(instance, dict)
            or set(instance) != {"b64"}
            or not isinstance(instance["b64"], str)
        ):
            raise HTTPException(
                400,
                f'instances[{i}]: expected {{"b64": "<base64 image>"}} (or '
                f'{{"{contract.INPUT_IMAGE_BYTES}": {{"b64": ...}}}}).',
            )
        try:
            images.append((f"instances[{i}]", decode_base64(instance["b64"])))
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"instances[{i}]: invalid base64.") from None
    return images


def _check_json_keys(payload: dict[str, object]) -> None:
    """400 for a JSON body key the facade would ignore (the answer would not be what was
    asked), and for a `signature_name` other than the one signature it serves."""
    for name in QUERY_ONLY:
        if name in payload:
            raise HTTPException(400, _query_only(name, payload[name], "in the JSON body"))
    unknown = [key for key in payload if key not in JSON_KEYS]
    if unknown:
        raise HTTPException(
            400,
            'The JSON body takes "instances" and, optionally, "signature_name"; '
            f"{', '.join(_echo(key) for key in unknown[:5])} would be ignored. "
            f"Received keys: {', '.join(_echo(key) for key in list(payload)[:8])}.",
        )
    signature = payload.get("signature_name", "")
    if signature not in ("", contract.SIGNATURE_IMAGE_BYTES):  # TF Serving's "": the default
        raise HTTPException(
            400,
            f'signature_name should be "{contract.SIGNATURE_IMAGE_BYTES}", the one signature '
            "the facade serves (or be left out). Received: "
            f"signature_name={_echo(signature)}.",
        )


def _query_only(name: str, value: object, where: str) -> str:
    return (
        f"{name} is a query parameter (POST /predict?{name}=3), not read {where}. "
        f"Received: {name}={_echo(value)}."
    )


def _echo(value: object) -> str:
    """`value` as a client wrote it (JSON), clipped."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return clipped(text)
