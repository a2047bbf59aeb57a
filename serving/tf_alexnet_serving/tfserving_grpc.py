"""A backend that calls TF Serving's gRPC API (tensorflow-serving-api stubs, grpc.aio)."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from tf_alexnet import contract
from tf_alexnet_serving.settings import Settings
from tf_alexnet_serving.tfserving_rest import UpstreamError

# gRPC status -> the facade's HTTP answer (client errors pass through, the rest is upstream).
_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
}


class GrpcBackend:
    """`PredictionService.Predict` and `ModelService.GetModelStatus` over one channel."""

    def __init__(self, settings: Settings) -> None:
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

        self.name = settings.model_name
        self.version = 0
        self.class_names = tuple(settings.class_names)
        self._settings = settings
        size = settings.grpc_max_message_bytes
        self._channel = grpc.aio.insecure_channel(
            settings.tfserving_grpc_address,
            options=[
                ("grpc.max_send_message_length", size),
                ("grpc.max_receive_message_length", size),
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

    async def start(self) -> None:
        await self.ready()

    async def stop(self) -> None:
        await self._channel.close()

    async def ready(self) -> bool:
        from tensorflow_serving.apis import get_model_status_pb2

        spec = self._model_spec()
        spec.ClearField("signature_name")
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        try:
            response = await self._status.GetModelStatus(request, timeout=self._settings.timeout_s)
        except grpc.aio.AioRpcError:
            return False
        available = [
            status.version
            for status in response.model_version_status
            if status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        ]
        if available:
            self.version = max(available)
        return bool(available)

    async def predict(self, image: bytes) -> np.ndarray:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(model_spec=self._model_spec())
        request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
            tf.make_tensor_proto([image], dtype=tf.string)
        )
        try:
            response = await self._predict.Predict(request, timeout=self._settings.timeout_s)
        except grpc.aio.AioRpcError as err:
            status = _STATUS.get(err.code(), 503)
            raise UpstreamError(status, f"TF Serving: {err.code().name}: {err.details()}") from None
        if response.model_spec.HasField("version"):
            self.version = response.model_spec.version.value
        probabilities = tf.make_ndarray(response.outputs[contract.OUTPUT_PROBABILITIES])
        return np.asarray(probabilities[0], np.float32)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "class_names": list(self.class_names),
            "backend": "tfserving-grpc",
        }
