"""Inference backends behind one small interface."""

from __future__ import annotations

import pathlib
import time
from typing import Any, Protocol

import numpy as np

from tf_alexnet import contract
from tf_alexnet.exported import ExportedModel, version_folder
from tf_alexnet_serving.batching import MicroBatcher
from tf_alexnet_serving.settings import Settings


class Backend(Protocol):
    name: str
    version: int
    class_names: tuple[str, ...]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def ready(self) -> bool: ...
    async def predict(self, image: bytes) -> np.ndarray: ...
    def metadata(self) -> dict[str, Any]: ...


def local_model_folder(settings: Settings) -> pathlib.Path:
    """The SavedModel folder the local backend serves (raises UserError when there is none)."""
    model_dir = pathlib.Path(settings.model_base_path) / settings.model_name
    return version_folder(model_dir, settings.model_version)


class LocalBackend:
    """Runs the exported SavedModel's bytes signature in process, micro-batched."""

    def __init__(self, settings: Settings, on_batch: Any = None, on_latency: Any = None) -> None:
        import tensorflow as tf

        exported = ExportedModel(local_model_folder(settings))
        self.name = settings.model_name
        self.version = exported.version
        self._signature = exported.signature(contract.SIGNATURE_IMAGE_BYTES)
        self.class_names = exported.class_names()
        self._metadata = exported.metadata()
        self._tf = tf
        self._on_latency = on_latency
        self._batcher = MicroBatcher(
            self._run, settings.max_batch_size, settings.max_batch_wait_ms / 1000, on_batch
        )

    def _run(self, images: list[bytes]) -> np.ndarray:
        start = time.perf_counter()
        outputs = self._signature(**{contract.INPUT_IMAGE_BYTES: self._tf.constant(images)})
        if self._on_latency is not None:
            self._on_latency(time.perf_counter() - start)
        return np.asarray(outputs[contract.OUTPUT_PROBABILITIES])

    async def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()

    async def ready(self) -> bool:
        return True

    async def predict(self, image: bytes) -> np.ndarray:
        result: np.ndarray = await self._batcher.submit(image)
        return result

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "class_names": list(self.class_names),
            "input_shape": self._metadata.get("input_shape"),
            "signatures": self._metadata.get("signatures"),
            "training_metrics": self._metadata.get("training_metrics", {}),
        }
