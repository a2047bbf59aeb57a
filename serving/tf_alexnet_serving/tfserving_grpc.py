"""A backend that calls TF Serving's gRPC API (tensorflow-serving-api stubs, grpc.aio)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable
from typing import Any

import grpc
import numpy as np

from tf_alexnet import contract
from tf_alexnet_serving import classes
from tf_alexnet_serving.classes import Answer
from tf_alexnet_serving.errors import (
    UpstreamError,
    check_bytes_input,
    none_available,
    refused_by_tfserving,
)
from tf_alexnet_serving.settings import Settings
from tf_alexnet_serving.tfserving_status import WatchedModel

# gRPC status -> the facade's HTTP answer (client errors pass through, the rest is upstream).
# INVALID_ARGUMENT and FAILED_PRECONDITION go through `refused_by_tfserving`: an image's fault,
# or a version label or signature TF Serving does not have.
_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
}

_RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)

RECONNECT_BACKOFF_MS = 1000
"""The longest wait between two attempts to reach TF Serving: gRPC's default grows to 120 s,
and every call fails at once meanwhile, so a facade stayed unready for up to 2 minutes after
TF Serving came back."""


TOO_LARGE = re.compile(r"(Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")
"""gRPC's own RESOURCE_EXHAUSTED for a message over `grpc.max_send_message_length` or
`grpc.max_receive_message_length` (GRPC_MAX_MESSAGE_BYTES): not TF Serving overloaded, and
trying again fails alike."""


HTTP_1_SERVER = "http1.x server"
"""In gRPC's UNAVAILABLE when the address answers in HTTP/1.1: TF Serving's REST port."""


def _upstream_error(err: grpc.aio.AioRpcError) -> UpstreamError:
    message = f"TF Serving: {err.code().name}: {err.details()}"
    if HTTP_1_SERVER in (err.details() or ""):
        message += (
            " Is TFSERVING_GRPC_ADDRESS TF Serving's gRPC port (8500), not its REST port (8501)?"
        )
    too_large = TOO_LARGE.search(err.details() or "")
    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and too_large:
        size, limit = int(too_large[2]), int(too_large[3])
        if too_large[1] == "Sent":  # the facade's request: the image is too large to pass on
            return UpstreamError(
                413,
                f"The image is too large to send to TF Serving: a {size:,}-byte gRPC message, "
                f"over GRPC_MAX_MESSAGE_BYTES ({limit:,} bytes).",
            )
        if "CLIENT" in err.details():  # the facade received it: TF Serving's answer
            return UpstreamError(
                503,
                f"TF Serving's answer is a {size:,}-byte gRPC message, over "
                f"GRPC_MAX_MESSAGE_BYTES ({limit:,} bytes): raise it.",
            )
        return UpstreamError(  # TF Serving received it: the request
            413,
            f"The image is too large for TF Serving: a {size:,}-byte gRPC message, over its "
            f"limit ({limit:,} bytes).",
        )
    status = _STATUS.get(err.code(), 503)
    if status == 400:
        return refused_by_tfserving(message)
    return UpstreamError(status, message, retry_after=1 if err.code() in _RETRY else None)


class GrpcBackend(WatchedModel):
    """`PredictionService.Predict` and `ModelService.GetModelStatus` over one channel."""

    def __init__(
        self, settings: Settings, on_latency: Callable[[float], None] | None = None
    ) -> None:
        """`on_latency` gets the seconds of each answer to a client's image (the facade's
        `tf_alexnet_backend_seconds`)."""
        if not settings.tfserving_grpc_address:
            raise ValueError("tfserving_grpc_address is not set.")
        try:
            from tensorflow_serving.apis import (
                model_service_pb2_grpc,
                prediction_service_pb2_grpc,
            )
        except ImportError as err:
            raise ImportError(
                "The tfserving-grpc backend needs tensorflow-serving-api, which pulls in "
                "TensorFlow; the slim `api` image has neither. Use the tfserving-rest backend "
                f"there, or install tensorflow-serving-api. Received: {err}"
            ) from err

        super().__init__(settings, "tfserving-grpc")
        self._settings = settings
        self._on_latency = on_latency
        size = settings.grpc_max_message_bytes
        self._channel = grpc.aio.insecure_channel(
            settings.tfserving_grpc_address,
            options=[
                ("grpc.max_send_message_length", size),
                ("grpc.max_receive_message_length", size),
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
            ],
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._status = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _model_spec(self) -> Any:
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=self.name, signature_name=contract.SIGNATURE_IMAGE_BYTES)
        if self._settings.model_version:
            spec.version.value = self._settings.model_version
        elif self._settings.model_label:
            spec.version_label = self._settings.model_label
        return spec

    async def _close(self) -> None:
        await self._channel.close()

    async def _learn_version(self) -> None:
        """The version served and its classes, from TF Serving (raises UpstreamError)."""
        from tensorflow_serving.apis import get_model_status_pb2

        spec = self._model_spec()
        spec.ClearField("signature_name")
        # TF Serving's model status narrows to a version, never to a label: it lists every
        # version whatever the label, and the label's version comes from the metadata.
        spec.ClearField("version_label")
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        try:
            response = await self._status.GetModelStatus(request, timeout=self._settings.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _upstream_error(err) from None
        states = get_model_status_pb2.ModelVersionStatus.State
        statuses = [
            (status.version, states.Name(status.state), status.status.error_message)
            for status in response.model_version_status
        ]
        available = [version for version, state, _ in statuses if state == "AVAILABLE"]
        if not available:
            raise UpstreamError(503, none_available(statuses), retry_after=1)
        self.version = await self._label_version() if self._label else max(available)
        if self.version != self._names_version:
            await self._learn_classes()

    async def _metadata(self, spec: Any) -> Any:
        """GetModelMetadata's signatures for `spec` (raises UpstreamError)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=["signature_def"]
        )
        try:
            return await self._predict.GetModelMetadata(request, timeout=self._settings.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _upstream_error(err) from None

    async def _label_version(self) -> int:
        """The version the configured label points at, from its metadata."""
        spec = self._model_spec()
        spec.ClearField("signature_name")
        version: int = (await self._metadata(spec)).model_spec.version.value
        return version

    async def _learn_classes(self) -> None:
        """The served version's class count (its metadata), then a few names (a probe)."""
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        version = self.version
        spec = model_pb2.ModelSpec(name=self.name)
        spec.version.value = version
        count = None  # else learnt from the first answer
        try:
            response = await self._metadata(spec)
        except UpstreamError:
            response = None
        signatures = get_model_metadata_pb2.SignatureDefMap()
        if response is not None and response.metadata["signature_def"].Unpack(signatures):
            found = signatures.signature_def
            self._foreign = False
            try:
                check_bytes_input(
                    found[contract.SIGNATURE_IMAGE_BYTES].inputs
                    if contract.SIGNATURE_IMAGE_BYTES in found
                    else None,
                    version,
                )
            except UpstreamError:
                self._foreign = True
                raise
            signature = found[contract.SIGNATURE_IMAGE_BYTES]
            dims = signature.outputs[contract.OUTPUT_PROBABILITIES].tensor_shape.dim
            count = dims[-1].size if dims and dims[-1].size > 0 else None

        async def probe(images: list[bytes]) -> list[tuple[int, str]]:
            _, ids, names = await self._call(images)
            return list(zip(ids, names, strict=True))

        await classes.learn_names(self.names, count, probe)
        self._names_version = version

    async def _call(self, images: list[bytes]) -> tuple[np.ndarray, list[int], list[str]]:
        """(probabilities, class ids, class names) for `images`, from one Predict call."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(model_spec=self._model_spec())
        request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
            tf.make_tensor_proto(images, dtype=tf.string)
        )
        try:
            response = await self._predict.Predict(request, timeout=self._settings.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _upstream_error(err) from None
        outputs = response.outputs
        if contract.OUTPUT_PROBABILITIES not in outputs:
            raise UpstreamError(
                503,
                f"TF Serving's answer has no `{contract.OUTPUT_PROBABILITIES}`: "
                f"{', '.join(sorted(outputs)) or 'no outputs'}",
            )
        if response.model_spec.HasField("version"):
            self.version = response.model_spec.version.value
        probabilities = np.asarray(
            tf.make_ndarray(outputs[contract.OUTPUT_PROBABILITIES]), np.float32
        )
        ids, names = [], []
        if contract.OUTPUT_CLASS_ID in outputs and contract.OUTPUT_CLASS_NAME in outputs:
            ids = [int(i) for i in tf.make_ndarray(outputs[contract.OUTPUT_CLASS_ID])]
            names = [
                n.decode("utf-8", "replace")
                for n in tf.make_ndarray(outputs[contract.OUTPUT_CLASS_NAME])
            ]
        return probabilities, ids, names

    async def predict(self, image: bytes, group: Hashable | None = None) -> Answer:
        """(`group` is not used: TF Serving queues each call as it comes.)"""
        if failure := self.failing_fast():
            raise failure
        if self._foreign and not await self.ready():  # unless another version serves now
            raise self._unavailable()
        try:
            start = time.perf_counter()
            batch, ids, names = await self._call([image])
            if self._on_latency is not None:
                self._on_latency(time.perf_counter() - start)
        except UpstreamError as err:
            if err.status != 400:
                raise
            batch, ids, names = await self._refused(err, lambda: self._call([image]))
        version = self.version  # the version that answered (`_call` set it, no await since)
        probabilities = batch[0]
        if self.version != self._names_version:  # another version answered
            await self._learn_classes()
            self._events.available(self.version, self.names.count)
        learnt = all(self.names.learn(i, n) for i, n in zip(ids, names, strict=True))
        if len(probabilities) != self.names.count or not learnt:
            self.names.reset(len(probabilities))
            for class_id, name in zip(ids, names, strict=True):
                self.names.learn(class_id, name)
        return Answer(probabilities, version, self.names)

    async def probe(self) -> None:
        """Raises UpstreamError unless the served version answers a known-good image."""
        await self._call(classes.probe_images()[:1])

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "class_names": self.names.as_list(),
            "backend": "tfserving-grpc",
        }
