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
- Predict (`util/json_tensor.cc`, read and written by `json_tensor.py`): `instances` (row,
  also objects keyed by input name) or `inputs` (columnar), `{"b64": ...}` values for string
  inputs, values typed by the signature; floats written as the shortest of `%g` and 9 (float)
  or 17 (double) significant digits that reads back exactly, whole numbers with `.0`, and
  NaN/Infinity as `NaN`/`Infinity`.
- Errors as `{"error": "..."}` with `http_server.cc`'s status mapping, and gRPC status codes.
- Versions (`sources/storage_path/file_system_storage_path_source.cc`): integer-named folders,
  loaded from their real name (`0004` is version 4); the newest `num_versions` (None: all);
  `poll()` loads a new version before it unloads the one it replaces; a failed load is retried
  `max_num_load_retries` times, `load_retry_interval_micros` apart, in state LOADING, then END
  with the failure's canonical code (`core/basic_manager.cc`), and not tried again while its
  folder stays. A deleted folder is no longer wanted: the newest remaining version is loaded
  (again, if it was unloaded before) and the deleted one unloaded (END); with none left, none
  is served (`core/availability_preserving_policy.cc`, `core/aspired_versions_manager.cc`).

- Batching (`batching/batching_session.cc`, with `batching`): concurrent calls of a signature
  run as one batch of at most `max_batch_size` rows, and the batch's failure is each call's.

Not emulated: `:classify`/`:regress` (501), batching's queue limits and padding, warmup, request
timeouts, config reloads, JSON parse error texts (rapidjson's own), and the order of outputs
(TF Serving's is a hash map's).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import numpy as np
import tensorflow as tf
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .json_tensor import (
    ServingError,
    columnar_inputs,
    columnar_json,
    json_text,
    parse_json,
    row_inputs,
    row_json,
)

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
        batching: Batching | None = None,
    ):
        self.base_path = pathlib.Path(base_path)
        self.name = name
        self.model_path = model_path or self.base_path / name  # TF Serving's model base path
        self.labels = labels or {}
        self.num_versions = num_versions
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval_micros = load_retry_interval_micros
        self.batcher = Batcher(batching) if batching is not None else None
        self.models: dict[int, Any] = {}  # the AVAILABLE versions; replaced, never mutated
        self.signature_defs: dict[int, Any] = {}  # their SignatureDefMaps, for metadata
        self.states: dict[int, tuple[str, str, str]] = {}  # version: (state, code, message)
        self._failed: set[int] = set()  # failed to load and still on disk: not tried again
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
            if not self.model_path.is_dir():
                return  # a file-system error: TF Serving changes nothing until the next poll
            found = self.versions_found()
            numbers = sorted(found)
            wanted = numbers if self.num_versions is None else numbers[-self.num_versions :]
            self._failed &= set(wanted)  # a failure no longer wanted is forgotten
            for version in wanted:
                if version in self.models or version in self._failed:
                    continue  # loaded, or failed to load (TF Serving gives up after its retries)
                self._load(version, found[version])
            unwanted = sorted(set(self.models) - set(wanted))
            if wanted and not any(version in self.models for version in wanted):
                unwanted = unwanted[:-1]  # availability preserving: the newest keeps serving
            for version in unwanted:  # oldest first
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
        self._failed.add(version)
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

    def run(
        self, version: int, model: Any, signature_name: str, tensors: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """One call of a signature (Session::Run), or, with batching, its share of a batch."""

        def call(inputs: dict[str, Any]) -> dict[str, np.ndarray]:
            try:
                outputs = model.signatures[signature_name](**inputs)
            except tf.errors.OpError as err:
                raise ServingError(_code_name(err.error_code), err.message) from err
            except (TypeError, ValueError) as err:
                raise ServingError("INVALID_ARGUMENT", str(err).splitlines()[0]) from err
            return {key: value.numpy() for key, value in outputs.items()}

        if self.batcher is None:
            return call(tensors)
        arrays = {key: np.asarray(value) for key, value in tensors.items()}
        return self.batcher.run((version, signature_name, tuple(sorted(arrays))), arrays, call)

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
        document = parse_json(body)
        signature_name = document.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"JSON Value: {json_text(document)} not formatted correctly. "
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
                f"JSON Value: {json_text(document)} Not formatted correctly expecting only one "
                "of 'inputs' or 'instances' keys to exist ",
            )
        try:
            if row:
                inputs = row_inputs(document, dtypes)
            elif "inputs" in document:
                inputs = columnar_inputs(document["inputs"], dtypes)
            else:
                raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
        except RecursionError as err:  # values nested deeper than the reader recurses
            raise ServingError("INVALID_ARGUMENT", "JSON Value nested too deeply") from err
        tensors = {key: tf.constant(value, dtype=dtypes[key]) for key, value in inputs.items()}
        check_shapes(tensors, signature_def[signature_name])
        arrays = self.run(number, model, signature_name, tensors)
        return (row_json(arrays) if row else columnar_json(arrays)).encode(
            "utf-8", "surrogateescape"
        )


@dataclasses.dataclass(frozen=True)
class Batching:
    """The BatchingParameters the stand-in follows (`--batching_parameters_file`)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0


class _Batch:
    def __init__(self) -> None:
        self.tasks: list[dict[str, np.ndarray]] = []
        self.size = 0
        self.closed = threading.Event()  # full: no task joins it any more
        self.done = threading.Event()
        self.results: list[dict[str, np.ndarray]] = []
        self.error: ServingError | None = None


class Batcher:
    """TF Serving's BatchingSession (`batching/batching_session.cc`) over one signature's
    calls: concurrent calls with the same inputs join one batch, which runs once when
    `max_batch_size` rows have come or `batch_timeout_micros` after it opened; their inputs
    are concatenated along dimension 0 and the outputs split back. The batch's status is
    every task's: one call that fails (an image that does not decode) fails every call of
    its batch. Not emulated: queue limits (`max_enqueued_batches`), padding, batch threads."""

    def __init__(self, batching: Batching) -> None:
        self.batching = batching
        self._lock = threading.Lock()
        self._open: dict[Any, _Batch] = {}

    def run(
        self,
        key: Any,
        inputs: dict[str, np.ndarray],
        call: Callable[[dict[str, Any]], dict[str, np.ndarray]],
    ) -> dict[str, np.ndarray]:
        size = _task_size(inputs)
        limit = self.batching.max_batch_size
        if size > limit:  # shared_batch_scheduler.h ValidateBatchTaskQueueCapacity()
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Task size {size} is larger than maximum input batch size {limit}",
            )
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None or batch.size + size > limit
            if leader:
                if batch is not None:
                    batch.closed.set()
                batch = self._open[key] = _Batch()
            assert batch is not None
            index = len(batch.tasks)
            batch.tasks.append(inputs)
            batch.size += size
            if batch.size >= limit:
                del self._open[key]
                batch.closed.set()
        if leader:
            batch.closed.wait(self.batching.batch_timeout_micros / 1e6)
            with self._lock:
                if self._open.get(key) is batch:
                    del self._open[key]
            try:
                batch.results = _split(batch, call(_merge(batch)))
            except ServingError as err:  # ProcessBatch(): the batch's status, for every task
                batch.error = err
            finally:
                batch.done.set()
        batch.done.wait()
        if batch.error is not None:
            raise ServingError(batch.error.code, batch.error.message)
        return batch.results[index]


def _task_size(inputs: dict[str, np.ndarray]) -> int:
    """ComputeTensorBatchSize(): every input's dimension 0, which must agree."""
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise ServingError(
                "INVALID_ARGUMENT",
                "Batching Run() input tensors must have at least one dimension",
            )
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise ServingError(
            "INVALID_ARGUMENT", "Batching Run() input tensors must have equal 0th-dimension size"
        )
    return sizes.pop() if sizes else 0


def _merge(batch: _Batch) -> dict[str, np.ndarray]:
    """MergeInputTensors() with padding off: the same shape past dimension 0, or refused."""
    merged = {}
    for name in batch.tasks[0]:
        parts = [task[name] for task in batch.tasks]
        if any(part.shape[1:] != parts[0].shape[1:] for part in parts):
            raise ServingError(
                "FAILED_PRECONDITION",
                f"Tensors with name '{name}' from different tasks have different shapes and "
                "padding is turned off.Set pad_variable_length_inputs to true, or ensure that "
                "all tensors with the same namehave equal dimensions starting with the first "
                "dim.",
            )
        merged[name] = np.concatenate(parts)
    return merged


def _split(batch: _Batch, outputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """SplitOutputTensors(): each output cut back into the tasks' rows."""
    for array in outputs.values():
        if array.ndim == 0:
            raise ServingError("FAILED_PRECONDITION", "Batched output tensor has 0 dimensions")
        if array.shape[0] != batch.size:
            raise ServingError(
                "FAILED_PRECONDITION",
                "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                "dimension sizes of the input tensors",
            )
    results, start = [], 0
    for task in batch.tasks:
        rows = _task_size(task)
        results.append({key: array[start : start + rows] for key, array in outputs.items()})
        start += rows
    return results


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


def check_shapes(tensors: dict[str, Any], signature: Any) -> None:
    """INVALID_ARGUMENT for an input whose shape the signature's does not take. A wrong rank
    reached the model's kernels: a 2-D tensor for `serving_pixels` failed a oneDNN CHECK and
    killed the stand-in's process (every later request was refused). TF Serving's own text for
    it is not emulated."""
    for key, tensor in tensors.items():
        if key not in signature.inputs:
            continue  # the call names the unknown input, as before
        expected = tf.TensorShape(signature.inputs[key].tensor_shape)
        if not expected.is_compatible_with(tensor.shape):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input {key} has shape {tensor.shape.as_list()}, where the signature takes "
                f"{expected.as_list()} (None: any size)",
            )


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
        check_shapes(inputs, self.servables.signature_defs[version].signature_def[name])
        outputs = self.servables.run(version, model, name, inputs)
        response = predict_pb2.PredictResponse(
            model_spec=model_pb2.ModelSpec(name=request.model_spec.name, signature_name=name)
        )
        response.model_spec.version.value = version
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
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
