"""A test server that speaks TF Serving's REST API (g3doc/api_rest.md) over a real SavedModel.

Implements what the facade uses, as documented: model status
(`GET /v1/models/NAME[/versions/N|/labels/L]`, with TF Serving's version states), predict in row
(`instances`) and columnar (`inputs`) formats with `{"b64": ...}` binary values and an optional
`signature_name`, and errors as `{"error": "..."}` with TF Serving's status codes (400 for
INVALID_ARGUMENT, 404 for NOT_FOUND).

Versions come from the base path as TF Serving's file-system source finds them: integer-named
folders only, the newest `num_versions` of them (None: all, the `all` policy), and `poll()`
(every `--file_system_poll_wait_seconds` in a container, see `__main__.py`) loads a new version
before it unloads the one it replaces, so that "Latest" always answers.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import threading
from typing import Any

import numpy as np
import tensorflow as tf
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?(?P<verb>:predict|/metadata)?$"
)


class TFServingREST:
    def __init__(
        self,
        base_path: pathlib.Path,
        name: str,
        labels: dict[str, int] | None = None,
        num_versions: int | None = None,
        model_path: pathlib.Path | None = None,
    ):
        self.base_path = pathlib.Path(base_path)
        self.name = name
        self.model_path = model_path or self.base_path / name  # TF Serving's model base path
        self.labels = labels or {}
        self.num_versions = num_versions
        self.models: dict[int, Any] = {}  # the AVAILABLE versions; replaced, never mutated
        self.signature_defs: dict[int, Any] = {}  # their SignatureDefMaps, for metadata
        self.states: dict[int, tuple[str, str]] = {}  # version: (state, error message)
        self._polling = threading.Lock()
        self.poll()
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])

    def poll(self) -> None:
        """One pass over the base path: load the wanted versions, then unload the others."""
        with self._polling:
            folder = self.model_path
            found = sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit())
            wanted = found if self.num_versions is None else found[-self.num_versions :]
            for version in wanted:
                if version in self.states:
                    continue  # loaded, or failed to load (TF Serving gives up after its retries)
                self.states[version] = ("LOADING", "")
                try:
                    model = tf.saved_model.load(str(folder / str(version)))
                    signature_defs = _signature_defs(folder / str(version))
                except Exception as err:  # TF Serving reports a failed load in the status
                    self.states[version] = ("END", str(err).splitlines()[0])
                    continue
                self.signature_defs = {**self.signature_defs, version: signature_defs}
                self.models = {**self.models, version: model}
                self.states[version] = ("AVAILABLE", "")
            if not any(version in self.models for version in wanted):
                return  # availability preserving: keep serving until a wanted version serves
            for version in set(self.models) - set(wanted):
                self.states[version] = ("UNLOADING", "")
                self.models = {v: m for v, m in self.models.items() if v != version}
                self.states[version] = ("END", "")

    def poll_forever(self, wait_seconds: float, stop: threading.Event) -> None:
        while not stop.wait(wait_seconds):
            self.poll()

    def status(self, name: str, version: str | None, label: str | None) -> dict[str, Any]:
        """`GetModelStatus` as TF Serving answers it: every version it knows, or one."""
        if label is not None:
            if label not in self.labels:
                raise LookupError(f"Unrecognized servable version label: {label}")
            version = str(self.labels[label])
        if name != self.name or not self.states:
            raise LookupError(f"Servable not found for request: Latest({name})")
        if version is not None and int(version) not in self.states:
            raise LookupError(f"Could not find version {version} of model {name}")
        versions = [int(version)] if version is not None else sorted(self.states, reverse=True)
        return {
            "model_version_status": [
                {
                    "version": str(number),
                    "state": self.states[number][0],
                    "status": {
                        "error_code": "UNKNOWN" if self.states[number][1] else "OK",
                        "error_message": self.states[number][1],
                    },
                }
                for number in versions
            ]
        }

    def _servable(self, name: str, version: str | None, label: str | None) -> tuple[int, Any]:
        request = f"Specific({name}, {version})" if version else f"Latest({name})"
        if label is not None:
            if label not in self.labels:
                raise LookupError(f"Unrecognized servable version label: {label}")
            version = str(self.labels[label])
        if name != self.name or not self.models:
            raise LookupError(f"Servable not found for request: {request}")
        number = int(version) if version else max(self.models)
        if number not in self.models:
            raise LookupError(f"Servable not found for request: {request}")
        return number, self.models[number]

    async def handle(self, request: Request) -> JSONResponse:
        match = PATH.match(request.url.path)
        if not match:
            return JSONResponse({"error": "Malformed request: " + request.url.path}, 404)
        if request.method == "GET" and not match["verb"]:
            try:
                return JSONResponse(self.status(match["name"], match["version"], match["label"]))
            except LookupError as err:
                return JSONResponse({"error": str(err)}, 404)
        try:
            version, model = self._servable(match["name"], match["version"], match["label"])
        except LookupError as err:
            return JSONResponse({"error": str(err)}, 404)
        if request.method == "GET" and match["verb"] == "/metadata":
            from google.protobuf import json_format

            return JSONResponse(
                {
                    "model_spec": {
                        "name": self.name,
                        "signature_name": "",
                        "version": str(version),
                    },
                    "metadata": {
                        "signature_def": json_format.MessageToDict(
                            self.signature_defs[version], preserving_proto_field_name=True
                        )
                    },
                }
            )
        if request.method != "POST" or match["verb"] != ":predict":
            return JSONResponse({"error": "Malformed request"}, 400)
        try:
            body = json.loads(await request.body())
            return JSONResponse(await run_in_threadpool(self._predict, model, body))
        except (ValueError, KeyError, TypeError) as err:
            return JSONResponse({"error": str(err)}, 400)
        except tf.errors.InvalidArgumentError as err:
            return JSONResponse({"error": err.message}, 400)

    def _predict(self, model: Any, body: dict[str, Any]) -> dict[str, Any]:
        if ("instances" in body) == ("inputs" in body):
            raise ValueError(
                "Missing 'inputs' or 'instances' key"
                if "instances" not in body
                else "Both 'inputs' and 'instances' keys"
            )
        signature = model.signatures[body.get("signature_name", "serving_default")]
        (input_name,) = signature.structured_input_signature[1]
        values = body.get("instances", body.get("inputs"))
        if isinstance(values, dict):
            values = values[input_name]
        tensor = tf.constant([_decode(v) for v in values])
        outputs = signature(**{input_name: tensor})
        rows = {key: _jsonable(key, value.numpy()) for key, value in outputs.items()}
        if len(rows) == 1:  # one output: its values alone, in both formats
            (only,) = rows.values()
            return {"predictions": only} if "instances" in body else {"outputs": only}
        if "instances" in body:
            count = len(values)
            return {"predictions": [{key: rows[key][i] for key in rows} for i in range(count)]}
        return {"outputs": rows}


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


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise ValueError("JSON object: does not have named input: b64")
        return base64.b64decode(value["b64"], validate=True)
    return value


def _jsonable(key: str, array: np.ndarray) -> Any:
    if array.dtype == object:
        if key.endswith("_bytes"):
            return [{"b64": base64.b64encode(v).decode()} for v in array.tolist()]
        return [v.decode("utf-8") for v in array.tolist()]
    return array.tolist()


class TFServingGRPC:
    """TF Serving's gRPC `PredictionService.Predict` and `ModelService.GetModelStatus`,
    over the same servables as `TFServingREST` (status codes as TF Serving's: NOT_FOUND for
    an unknown servable, INVALID_ARGUMENT for a bad input)."""

    def __init__(self, servables: TFServingREST) -> None:
        self.servables = servables

    def add_to(self, server: Any) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        outer = self

        class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
            async def Predict(self, request: Any, context: Any) -> Any:
                return await outer.predict(request, context)

            async def GetModelMetadata(self, request: Any, context: Any) -> Any:
                return await outer.metadata(request, context)

        class Models(model_service_pb2_grpc.ModelServiceServicer):
            async def GetModelStatus(self, request: Any, context: Any) -> Any:
                return await outer.status(request, context)

        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(Models(), server)

    async def _resolve(self, spec: Any, context: Any) -> tuple[int, Any]:
        import grpc

        version = str(spec.version.value) if spec.HasField("version") else None
        label = spec.version_label if spec.HasField("version_label") else None
        try:
            return self.servables._servable(spec.name, version, label)
        except LookupError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
            raise

    async def predict(self, request: Any, context: Any) -> Any:
        import grpc
        from tensorflow_serving.apis import model_pb2, predict_pb2

        version, model = await self._resolve(request.model_spec, context)
        name = request.model_spec.signature_name or "serving_default"
        if name not in model.signatures:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature name: "{name}" not found in signature def',
            )
        inputs = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
        try:
            outputs = model.signatures[name](**inputs)
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err).splitlines()[0])
        response = predict_pb2.PredictResponse(
            model_spec=model_pb2.ModelSpec(name=request.model_spec.name, signature_name=name)
        )
        response.model_spec.version.value = version
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response

    async def metadata(self, request: Any, context: Any) -> Any:
        import grpc
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        version, _ = await self._resolve(request.model_spec, context)
        if list(request.metadata_field) != ["signature_def"]:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is required"
            )
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=model_pb2.ModelSpec(name=request.model_spec.name)
        )
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(self.servables.signature_defs[version])
        return response

    async def status(self, request: Any, context: Any) -> Any:
        from tensorflow_serving.apis import get_model_status_pb2

        version, _ = await self._resolve(request.model_spec, context)
        status = get_model_status_pb2.ModelVersionStatus(
            version=version, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE
        )
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=[status])
