"""A test server that speaks TF Serving's REST and gRPC APIs over real SavedModels.

What it follows, and where in TF Serving's source (github.com/tensorflow/serving) it was read:

- Routing (`model_servers/http_server.cc`, `http_rest_api_util.cc`): only paths matching
  `(?i)/v1/.*` reach the API, the rest get libevent's bare 404 page; the path regexes are
  case-insensitive and match the raw path plus query; a `/v1` request no regex takes is
  400 "Malformed request: METHOD PATH"; `GET /v1/models` is 400 "Missing model name in request.".
- Model status (`get_model_status_impl.cc`): every version the server has seen, newest first,
  with its state (LOADING, AVAILABLE, UNLOADING, END) and its load error; only a version narrows
  it, a label is ignored; "Could not find version N of model M" and
  "Could not find any versions of model M" (NOT_FOUND).
- Servables (`server_core.cc`): a label resolves per model, an unknown one is INVALID_ARGUMENT
  "Unrecognized servable version label: L"; a missing servable is NOT_FOUND
  "Servable not found for request: Latest(M)" or "Specific(M, N)".
- Predict (`util/json_tensor.cc`): `instances` (row, also objects keyed by input name) or
  `inputs` (columnar), `{"b64": ...}` values for string inputs, values typed by the signature;
  floats written as the shortest of `%g` and 9 (float) or 17 (double) significant digits that
  reads back exactly, whole numbers with `.0`, and NaN/Infinity as `NaN`/`Infinity`.
- Errors as `{"error": "..."}` with `http_server.cc`'s status mapping, and gRPC status codes.
- Versions (`sources/storage_path/file_system_storage_path_source.cc`): integer-named folders,
  loaded from their real name (`0004` is version 4); the newest `num_versions` (None: all);
  `poll()` loads a new version before it unloads the one it replaces; a failed load is retried
  `max_num_load_retries` times, `load_retry_interval_micros` apart, in state LOADING, then END
  with the failure's canonical code (`core/basic_manager.cc`).

Not emulated: `:classify`/`:regress` (501), batching, warmup, request timeouts, config reloads,
JSON parse error texts (rapidjson's own), and the order of outputs (TF Serving's is a hash map's).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import pathlib
import re
import threading
import time
from typing import Any
from urllib.parse import unquote

import numpy as np
import tensorflow as tf
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# http_rest_api_util.cc and http_rest_api_handler.cc; RE2 FullMatch, so fullmatch() here.
API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
# libevent's evhttp_send_error() page, as TF Serving's HTTP server sends it for other paths.
NOT_FOUND_PAGE = (
    "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n"
    "</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"
)
# http_server.cc ToHTTPStatusCode().
HTTP_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
# server.cc: builder.SetMaxMessageSize(tensorflow::kint32max).
MAX_MESSAGE_SIZE = 2**31 - 1
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
]
INT64_MAX = 2**63 - 1


class ServingError(Exception):
    """A TF Serving error status: canonical code name (`NOT_FOUND`, ...) and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:  # as absl::Status prints itself
        return f"{self.code}: {self.message}"


class TFServingREST:
    """The servables of one model and TF Serving's REST API over them (`app`)."""

    def __init__(
        self,
        base_path: pathlib.Path,
        name: str,
        labels: dict[str, int] | None = None,
        num_versions: int | None = None,
        model_path: pathlib.Path | None = None,
        *,
        max_num_load_retries: int = 5,
        load_retry_interval_micros: int = 60_000_000,
    ):
        self.base_path = pathlib.Path(base_path)
        self.name = name
        self.model_path = model_path or self.base_path / name  # TF Serving's model base path
        self.labels = labels or {}
        self.num_versions = num_versions
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval_micros = load_retry_interval_micros
        self.models: dict[int, Any] = {}  # the AVAILABLE versions; replaced, never mutated
        self.signature_defs: dict[int, Any] = {}  # their SignatureDefMaps, for metadata
        self.states: dict[int, tuple[str, str, str]] = {}  # version: (state, code, message)
        self._polling = threading.Lock()
        self.poll()
        methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=methods)])

    # Versions ------------------------------------------------------------------------------

    def versions_found(self) -> dict[int, pathlib.Path]:
        """The base path's integer-named children, by version number, with their real paths."""
        found: dict[int, pathlib.Path] = {}
        if self.model_path.is_dir():
            for child in sorted(self.model_path.iterdir()):
                if re.fullmatch(r"[0-9]+", child.name) and int(child.name) <= INT64_MAX:
                    found.setdefault(int(child.name), child)
        return found

    def poll(self) -> None:
        """One pass over the base path: load the wanted versions, then unload the others."""
        with self._polling:
            found = self.versions_found()
            numbers = sorted(found)
            wanted = numbers if self.num_versions is None else numbers[-self.num_versions :]
            for version in wanted:
                if version in self.states:
                    continue  # loaded, or failed to load (TF Serving gives up after its retries)
                self._load(version, found[version])
            if not any(version in self.models for version in wanted):
                return  # availability preserving: keep serving until a wanted version serves
            for version in set(self.models) - set(wanted):
                self._set_state(version, "UNLOADING")
                self.models = {v: m for v, m in self.models.items() if v != version}
                self._set_state(version, "END")

    def _set_state(self, version: int, state: str, code: str = "OK", message: str = "") -> None:
        self.states = {**self.states, version: (state, code, message)}  # readers never block

    def _load(self, version: int, folder: pathlib.Path) -> None:
        self._set_state(version, "LOADING")
        error = ServingError("UNKNOWN", "")
        for attempt in range(max(self.max_num_load_retries, 0) + 1):
            if attempt and self.load_retry_interval_micros > 0:
                time.sleep(self.load_retry_interval_micros / 1e6)
            try:
                model = tf.saved_model.load(str(folder))
                signature_defs = _signature_defs(folder)
            except Exception as err:  # TF Serving reports the last failure in the status
                error = _load_error(err)
                continue
            self.signature_defs = {**self.signature_defs, version: signature_defs}
            self.models = {**self.models, version: model}
            self._set_state(version, "AVAILABLE")
            return
        self._set_state(version, "END", error.code, error.message)

    def poll_forever(self, wait_seconds: float, stop: threading.Event) -> None:
        while not stop.wait(wait_seconds):
            self.poll()

    # Requests --------------------------------------------------------------------------------

    def status(self, name: str, version: int | None) -> list[tuple[int, str, str, str]]:
        """`GetModelStatus`: (version, state, code, message) of every version it knows, newest
        first, or of one version. A label is not part of it (TF Serving ignores it here)."""
        states = self.states if name == self.name else {}
        if version is not None:
            if version not in states:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
            return [(version, *states[version])]
        if not states:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
        return [(number, *states[number]) for number in sorted(states, reverse=True)]

    def servable(self, name: str, version: int | None, label: str | None) -> tuple[int, Any]:
        """ServerCore::GetServableHandle: (version, loaded model) for a model spec."""
        if not name:
            raise ServingError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        if label is not None:
            if name != self.name or label not in self.labels:
                raise ServingError(
                    "INVALID_ARGUMENT", f"Unrecognized servable version label: {label}"
                )
            version = self.labels[label]
        request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        models = self.models if name == self.name else {}
        number = version if version is not None else max(models, default=None)
        if number is None or number not in models:
            raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
        return number, models[number]

    async def handle(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1")
        if request.scope.get("query_string"):
            path += "?" + request.scope["query_string"].decode("latin-1")
        if not API_PATH.fullmatch(path):
            return Response(
                NOT_FOUND_PAGE,
                404,
                headers={"Connection": "close"},
                media_type="text/html; charset=ISO-8859-1",
            )
        try:
            body = await self._process(request, path)
        except ServingError as err:
            return Response(
                json.dumps({"error": err.message}),
                HTTP_STATUS[err.code],
                media_type="application/json",
            )
        return Response(body, 200, media_type="application/json")

    async def _process(self, request: Request, path: str) -> bytes:
        method = request.method
        if method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
            name, version, label = _model_spec(*match.groups()[:3])
            if match[4] == "predict":  # the verb is compared case-sensitively
                body = await request.body()
                return await run_in_threadpool(self._predict, name, version, label, body)
            if match[4] in ("classify", "regress"):
                raise ServingError("UNIMPLEMENTED", f"the stand-in does not emulate :{match[4]}")
        elif method == "GET" and (match := STATUS_PATH.fullmatch(path)):
            name, version, label = _model_spec(*match.groups()[:3])
            if not name:
                raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
            if match[4] == "metadata":
                return self._metadata(name, version, label)
            return json.dumps({"model_version_status": self._status_json(name, version)}).encode()
        raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")

    def _status_json(self, name: str, version: int | None) -> list[dict[str, Any]]:
        return [
            {
                "version": str(number),
                "state": state,
                "status": {"error_code": code, "error_message": message},
            }
            for number, state, code, message in self.status(name, version)
        ]

    def _metadata(self, name: str, version: int | None, label: str | None) -> bytes:
        from google.protobuf import json_format

        number, _ = self.servable(name, version, label)
        signature_def = json_format.MessageToDict(
            self.signature_defs[number], preserving_proto_field_name=True
        )
        return json.dumps(
            {
                "model_spec": {"name": name, "signature_name": "", "version": str(number)},
                "metadata": {"signature_def": signature_def},
            }
        ).encode()

    def _predict(self, name: str, version: int | None, label: str | None, body: bytes) -> bytes:
        document = _parse_json(body)
        signature_name = document.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"JSON Value: {_json_text(document)} not formatted correctly. "
                "'signature_name' key must be a string value.",
            )
        number, model = self.servable(name, version, label)
        signature_name = signature_name or "serving_default"
        signature_def = self.signature_defs[number].signature_def
        if signature_name not in signature_def:
            raise ServingError(
                "INVALID_ARGUMENT",
                f'Serving signature name: "{signature_name}" not found in signature def',
            )
        dtypes = {
            key: tf.as_dtype(info.dtype)
            for key, info in signature_def[signature_name].inputs.items()
        }
        row = "instances" in document
        if row and "inputs" in document:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"JSON Value: {_json_text(document)} Not formatted correctly expecting only one "
                "of 'inputs' or 'instances' keys to exist ",
            )
        if row:
            inputs = _row_inputs(document, dtypes)
        elif "inputs" in document:
            inputs = _columnar_inputs(document["inputs"], dtypes)
        else:
            raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
        try:
            outputs = model.signatures[signature_name](
                **{key: tf.constant(value, dtype=dtypes[key]) for key, value in inputs.items()}
            )
        except tf.errors.OpError as err:
            raise ServingError(_code_name(err.error_code), err.message) from err
        except (TypeError, ValueError) as err:
            raise ServingError("INVALID_ARGUMENT", str(err).splitlines()[0]) from err
        arrays = {key: value.numpy() for key, value in outputs.items()}
        return (_row_json(arrays) if row else _columnar_json(arrays)).encode(
            "utf-8", "surrogateescape"
        )


def _model_spec(
    name: str | None, version: str | None, label: str | None
) -> tuple[str, int | None, str | None]:
    """ParseModelInfo(): names and labels URL-decoded, versions as int64."""
    number = None
    if version is not None:
        number = int(version)
        if number > INT64_MAX:
            raise ServingError(
                "INVALID_ARGUMENT", f"Failed to convert version: {version} to numeric."
            )
    return unquote(name or ""), number, (unquote(label) if label is not None else None)


def _signature_defs(folder: pathlib.Path) -> Any:
    """The SavedModel's signatures as TF Serving's metadata carries them (a SignatureDefMap)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved_model = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in saved_model.meta_graphs[0].signature_def.items():
        if key != "__saved_model_init_op":
            signatures.signature_def[key].CopyFrom(signature)
    return signatures


def _code_name(code: int) -> str:
    from tensorflow.core.protobuf import error_codes_pb2

    return error_codes_pb2.Code.Name(code)


def _load_error(err: Exception) -> ServingError:
    """A failed load as TF Serving's status reports it: the loader's canonical code."""
    message = (str(err).splitlines() or [type(err).__name__])[0]
    if isinstance(err, tf.errors.OpError):
        return ServingError(_code_name(err.error_code), err.message.splitlines()[0])
    if isinstance(err, OSError):  # e.g. no saved_model.pb: TF's reader says NOT_FOUND
        return ServingError("NOT_FOUND", message)
    return ServingError("UNKNOWN", message)


# JSON requests (util/json_tensor.cc) ------------------------------------------------------------


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=4)


def _parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise ServingError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except ValueError as err:
        offset = getattr(err, "pos", 0)
        raise ServingError(
            "INVALID_ARGUMENT", f"JSON Parse error: {getattr(err, 'msg', err)} at offset: {offset}"
        ) from err
    if not isinstance(document, dict):
        raise ServingError("INVALID_ARGUMENT", f"JSON Value: {_json_text(document)} Is not object")
    return document


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _b64decode(text: str) -> bytes:
    """absl::Base64Unescape: the standard alphabet, padding optional, whitespace skipped."""
    data = re.sub(r"[ \t\n\v\f\r]", "", text)
    stripped = data.rstrip("=")
    if (
        not re.fullmatch(r"[A-Za-z0-9+/]*", stripped)
        or len(stripped) % 4 == 1
        or (stripped != data and (len(data) % 4 or len(data) - len(stripped) > 2))
    ):
        raise ServingError("INVALID_ARGUMENT", "Unable to base64 decode")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4))
    except binascii.Error as err:
        raise ServingError("INVALID_ARGUMENT", "Unable to base64 decode") from err


def _type_name(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    for kind, name in ((dict, "Object"), (list, "Array"), (str, "String")):
        if isinstance(value, kind):
            return name
    return "Number"


def _leaf(value: Any, dtype: tf.DType) -> Any:
    """One JSON value as a value of the signature's input type (AddValueToTensor)."""
    if dtype == tf.string:
        if isinstance(value, dict):
            if not _is_b64(value):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"JSON Value: {_json_text(value)} not formatted correctly for base64 data",
                )
            return _b64decode(value["b64"])
        if isinstance(value, str):
            return value.encode("utf-8")
    elif dtype == tf.bool:
        if isinstance(value, bool):
            return value
    elif dtype.is_floating:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            single = dtype == tf.float32
            if (isinstance(value, int) and abs(value) > 2 ** (24 if single else 53) - 1) or (
                math.isfinite(value) and abs(value) > np.finfo(dtype.as_numpy_dtype).max
            ):  # IsLosslessDecimal()
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Cannot convert JSON value: {value} to {'float' if single else 'double'} "
                    "without loss of precision.",
                )
            return value
    elif dtype.is_integer:
        limits = np.iinfo(dtype.as_numpy_dtype)
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and limits.min <= value <= limits.max
        ):
            return value
    raise ServingError(
        "INVALID_ARGUMENT",
        f"JSON Value: {_json_text(value)} Type: {_type_name(value)} is not of expected type: "
        f"{dtype.name}",
    )


def _tensor(value: Any, dtype: tf.DType) -> np.ndarray:
    """A (nested) JSON value as a dense array; lists must be regular (FillTensorProto)."""

    def shape(item: Any) -> list[int]:
        return [len(item), *(shape(item[0]) if item else [])] if isinstance(item, list) else []

    def fill(item: Any, level: int, dims: list[int]) -> Any:
        if not isinstance(item, list):
            if level != len(dims):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"JSON Value: {_json_text(item)} found at incorrect level: {level + 1} in the "
                    f"JSON DOM. Expected at level: {len(dims)}",
                )
            return _leaf(item, dtype)
        if level >= len(dims):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Encountered list at unexpected level: {level} expected < {len(dims)}",
            )
        if len(item) != dims[level]:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Encountered list at unexpected size: {len(item)} at level: {level} "
                f"expected size: {dims[level]}",
            )
        return [fill(element, level + 1, dims) for element in item]

    dims = shape(value)
    filled = fill(value, 0, dims)
    return np.array(filled, dtype=object if dtype == tf.string else dtype.as_numpy_dtype).reshape(
        dims
    )


def _row_inputs(document: dict[str, Any], dtypes: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: plain values for one input, or objects keyed by name."""
    instances = document["instances"]
    if not isinstance(instances, list):
        raise ServingError(
            "INVALID_ARGUMENT",
            f"JSON Value: {_json_text(document)} Excepting 'instances' to be an list/array",
        )
    if not instances:
        raise ServingError(
            "INVALID_ARGUMENT", f"JSON Value: {_json_text(document)} No values in 'instances' array"
        )
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise ServingError(
            "INVALID_ARGUMENT",
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map",
        )
    named = _is_named(instances[0])
    columns: dict[str, list[np.ndarray]] = {}

    def add(index: int, key: str, value: Any, where: str) -> None:
        try:
            if key not in dtypes:
                raise ServingError(
                    "INVALID_ARGUMENT", f"JSON object: does not have named input: {key}"
                )
            array = _tensor(value, dtypes[key])
            if columns.get(key) and columns[key][0].shape != array.shape:
                first = columns[key][0]
                if first.size != array.size:
                    raise ServingError(
                        "INVALID_ARGUMENT",
                        f"Expecting tensor size: {first.size} but got: {array.size}",
                    )
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Expecting shape {_shape_text(first.shape)} but got: "
                    f"{_shape_text(array.shape)}",
                )
        except ServingError as err:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Failed to process element: {index}{where} of 'instances' list. Error: {err}",
            ) from err
        columns.setdefault(key, []).append(array)

    for index, instance in enumerate(instances):
        if named:
            if not _is_named(instance):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Expecting object but got list at item {index} of input list",
                )
            for key, value in instance.items():
                add(index, key, value, f" key: {key}")
            if set(instance) != set(dtypes):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_json_text(instance)} must only have keys: {','.join(sorted(dtypes))}",
                )
        else:
            if _is_named(instance):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Expecting value/list but got object at item {index} of input list",
                )
            add(index, min(dtypes), instance, "")
    return {key: np.stack(arrays) for key, arrays in columns.items()}


def _columnar_inputs(value: Any, dtypes: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap: a value for one input, or an object keyed by name."""
    if not isinstance(value, dict) or _is_b64(value):
        if len(dtypes) > 1:
            raise ServingError(
                "INVALID_ARGUMENT",
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map",
            )
        (key,) = dtypes
        return {key: _tensor(value, dtypes[key])}
    arrays = {}
    for key in sorted(dtypes):
        if key not in value:
            raise ServingError(
                "INVALID_ARGUMENT", f"Missing named input: {key} in 'inputs' object."
            )
        arrays[key] = _tensor(value[key], dtypes[key])
    return arrays


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# JSON responses (util/json_tensor.cc) -----------------------------------------------------------


def _number_text(value: Any, dtype: np.dtype) -> str:
    """WriteDecimal(): `%g` if it reads back exactly, else max_digits10 digits; `.0` on whole
    numbers; NaN and (-)Infinity as JSON extensions."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    single = dtype == np.float32
    text = f"{value:g}"
    if (np.float32(text) if single else float(text)) != value:
        text = f"{value:.{9 if single else 17}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _value_text(value: Any, dtype: np.dtype, as_bytes: bool) -> str:
    if dtype.kind == "f":
        if dtype not in (np.float32, np.float64):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Failed to write JSON value for tensor type: {tf.as_dtype(dtype).name}",
            )
        return _number_text(value, dtype)
    if dtype.kind == "b":
        return "true" if value else "false"
    if dtype.kind in "iu":
        return str(int(value))
    if as_bytes:
        return '{"b64": "' + base64.b64encode(value).decode() + '"}'
    return json.dumps(bytes(value).decode("utf-8", "surrogateescape"), ensure_ascii=False)


def _array_text(array: np.ndarray, as_bytes: bool) -> str:
    """AddTensorValues(): nested lists, a scalar alone."""
    if array.ndim == 0:
        return _value_text(array[()], array.dtype, as_bytes)
    if array.ndim == 1:
        values = (_value_text(value, array.dtype, as_bytes) for value in array.tolist())
        return "[" + ", ".join(values) + "]"
    return "[" + ", ".join(_array_text(item, as_bytes) for item in array) + "]"


def _as_bytes(key: str, array: np.ndarray) -> bool:
    return array.dtype == object and key.endswith("_bytes")


def _row_json(arrays: dict[str, np.ndarray]) -> str:
    """MakeRowFormatJsonFromTensors: one entry per batch item; one object each if several."""
    batch = 0
    for key, array in arrays.items():
        if array.ndim == 0:
            raise ServingError("INVALID_ARGUMENT", f"Tensor name: {key} has no shape information ")
        if array.shape[0] < 1:
            raise ServingError(
                "INVALID_ARGUMENT", f"Tensor name: {key} has invalid batch size: {array.shape[0]}"
            )
        if batch and array.shape[0] != batch:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Tensor name: {key} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}",
            )
        batch = array.shape[0]
    items = []
    for index in range(batch):
        if len(arrays) == 1:
            ((key, array),) = arrays.items()
            items.append(_array_text(array[index, ...], _as_bytes(key, array)))
        else:
            fields = (
                f"{json.dumps(key)}: {_array_text(array[index, ...], _as_bytes(key, array))}"
                for key, array in arrays.items()
            )
            items.append("{" + ", ".join(fields) + "}")
    return '{"predictions": [' + ", ".join(items) + "]}"


def _columnar_json(arrays: dict[str, np.ndarray]) -> str:
    """MakeColumnarFormatJsonFromTensors: the values alone, or an object if several outputs."""
    if len(arrays) == 1:
        ((key, array),) = arrays.items()
        return '{"outputs": ' + _array_text(array, _as_bytes(key, array)) + "}"
    fields = (
        f"{json.dumps(key)}: {_array_text(array, _as_bytes(key, array))}"
        for key, array in arrays.items()
    )
    return '{"outputs": {' + ", ".join(fields) + "}}"


# gRPC ---------------------------------------------------------------------------------------------


class TFServingGRPC:
    """TF Serving's gRPC `PredictionService.Predict/GetModelMetadata` and
    `ModelService.GetModelStatus`, over the same servables as `TFServingREST`."""

    def __init__(self, servables: TFServingREST) -> None:
        self.servables = servables

    def server(self) -> Any:
        """A `grpc.aio` server with these services, taking messages up to 2 GiB - 1 each way
        as TF Serving's does (`SetMaxMessageSize(kint32max)`); add a port and start it."""
        import grpc

        server = grpc.aio.server(options=GRPC_OPTIONS)
        self.add_to(server)
        return server

    def add_to(self, server: Any) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        outer = self

        class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
            async def Predict(self, request: Any, context: Any) -> Any:
                return await outer._call(outer.predict, request, context)

            async def GetModelMetadata(self, request: Any, context: Any) -> Any:
                return await outer._call(outer.metadata, request, context)

        class Models(model_service_pb2_grpc.ModelServiceServicer):
            async def GetModelStatus(self, request: Any, context: Any) -> Any:
                return await outer._call(outer.status, request, context)

        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(Models(), server)

    async def _call(self, method: Any, request: Any, context: Any) -> Any:
        import grpc

        try:
            return await run_in_threadpool(method, request)
        except ServingError as err:
            await context.abort(getattr(grpc.StatusCode, err.code), err.message)

    def _resolve(self, spec: Any) -> tuple[int, Any]:
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
        return self.servables.servable(spec.name, version, label)

    def predict(self, request: Any) -> Any:
        from tensorflow_serving.apis import model_pb2, predict_pb2

        version, model = self._resolve(request.model_spec)
        name = request.model_spec.signature_name or "serving_default"
        if name not in self.servables.signature_defs[version].signature_def:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        inputs = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
        try:
            outputs = model.signatures[name](**inputs)
        except tf.errors.OpError as err:
            raise ServingError(_code_name(err.error_code), err.message) from err
        except (TypeError, ValueError) as err:
            raise ServingError("INVALID_ARGUMENT", str(err).splitlines()[0]) from err
        response = predict_pb2.PredictResponse(
            model_spec=model_pb2.ModelSpec(name=request.model_spec.name, signature_name=name)
        )
        response.model_spec.version.value = version
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response

    def metadata(self, request: Any) -> Any:
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        version, _ = self._resolve(request.model_spec)
        if list(request.metadata_field) != ["signature_def"]:
            raise ServingError("INVALID_ARGUMENT", "Metadata field signature_def is required")
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=model_pb2.ModelSpec(name=request.model_spec.name)
        )
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(self.servables.signature_defs[version])
        return response

    def status(self, request: Any) -> Any:
        """GetModelStatusImpl: every version and its state, or the one `version` asks for."""
        from tensorflow.core.protobuf import error_codes_pb2
        from tensorflow_serving.apis import get_model_status_pb2, status_pb2

        if not request.HasField("model_spec"):
            raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        states = get_model_status_pb2.ModelVersionStatus.State
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=[
                get_model_status_pb2.ModelVersionStatus(
                    version=number,
                    state=states.Value(state),
                    status=status_pb2.StatusProto(
                        error_code=error_codes_pb2.Code.Value(code), error_message=message
                    ),
                )
                for number, state, code, message in self.servables.status(spec.name, version)
            ]
        )
