"""The local backend: the exported SavedModel run in process, micro-batched (the default)."""

from __future__ import annotations

import asyncio
import pathlib
import time
from typing import Any

import numpy as np

from tf_alexnet import contract
from tf_alexnet.errors import UserError
from tf_alexnet.exported import ExportedModel, model_names, version_folder
from tf_alexnet_serving.batching import DeadlineExceeded, MicroBatcher, QueueFull
from tf_alexnet_serving.classes import ClassNames, probe_images
from tf_alexnet_serving.errors import UpstreamError
from tf_alexnet_serving.settings import Settings


def local_model_folder(settings: Settings) -> pathlib.Path:
    """The SavedModel folder the local backend serves (raises UserError when there is none)."""
    base_path = pathlib.Path(settings.model_base_path)
    model_dir = base_path / settings.model_name
    if not model_dir.exists() and (others := model_names(base_path)):
        raise UserError(
            f"No model named {settings.model_name!r} in {str(base_path)!r}; it holds "
            f"{', '.join(map(repr, others))}. Pass --model-name (or set "
            "TF_ALEXNET_SERVE_MODEL_NAME)."
        )
    return version_folder(model_dir, settings.model_version)


class LocalBackend:
    """Runs the exported SavedModel's bytes signature in process, micro-batched."""

    def __init__(self, settings: Settings, on_batch: Any = None, on_latency: Any = None) -> None:
        import tensorflow as tf

        from tf_alexnet.hardware import enable_bf16_rewrite

        self.bf16 = enable_bf16_rewrite(settings.bf16)  # before the model's functions first run
        exported = ExportedModel(local_model_folder(settings))
        self.name = settings.model_name
        self.version = exported.version
        self._signature = exported.signature(contract.SIGNATURE_IMAGE_BYTES)
        outputs = self._signature.structured_outputs[contract.OUTPUT_PROBABILITIES]
        self.names = ClassNames(settings.class_names)
        self.names.reset(outputs.shape[-1], list(exported.class_names()))
        self._metadata = exported.metadata()
        self._tf = tf
        self._on_latency = on_latency
        self._batcher = MicroBatcher(
            self._run,
            settings.max_batch_size,
            settings.max_batch_wait_ms / 1000,
            on_batch,
            max_queue=settings.max_queue,
            timeout_s=settings.timeout_s,
        )

    def _run(self, images: list[bytes]) -> np.ndarray:
        start = time.perf_counter()
        outputs = self._signature(**{contract.INPUT_IMAGE_BYTES: self._tf.constant(images)})
        if self._on_latency is not None:
            self._on_latency(time.perf_counter() - start)
        return np.asarray(outputs[contract.OUTPUT_PROBABILITIES])

    async def start(self) -> None:
        # One call before the first request: TensorFlow's first run is slow (thread pools,
        # kernels), and it would count against the first client's timeout.
        await asyncio.to_thread(self._run, probe_images()[:1])
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()

    async def ready(self) -> bool:
        return True

    async def predict(self, image: bytes) -> np.ndarray:
        try:
            result: np.ndarray = await self._batcher.submit(image)
        except QueueFull as err:
            raise UpstreamError(503, f"Overloaded: {err}; retry later.", retry_after=1) from None
        except DeadlineExceeded as err:
            raise UpstreamError(504, f"The model gave no answer in time: {err}.") from None
        return result

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "class_names": self.names.as_list(),
            "input_shape": self._metadata.get("input_shape"),
            "signatures": self._metadata.get("signatures"),
            "bf16_rewrite": {"enabled": self.bf16.available, "reason": self.bf16.reason},
            "training_metrics": self._metadata.get("training_metrics", {}),
        }
