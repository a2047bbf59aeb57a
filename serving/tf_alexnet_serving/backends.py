"""The backends behind one small interface, and the factory that picks one from the settings.

- `local` (`local.py`): the exported SavedModel in process, micro-batched, new versions
  picked up as they are exported;
- `tfserving-rest` (`tfserving_rest.py`) and `tfserving-grpc` (`tfserving_grpc.py`): a TF
  Serving that serves the exported model.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol

from tf_alexnet_serving.classes import Answer, ClassNames
from tf_alexnet_serving.local import LocalBackend, local_model_folders
from tf_alexnet_serving.settings import Settings

__all__ = ["Backend", "LocalBackend", "local_model_folders", "make_backend"]


class Backend(Protocol):
    name: str
    unavailable_reason: str
    """Why `ready()` last answered False ("" when it answered True)."""

    @property
    def version(self) -> int:
        """The version served now (an answer carries the version that computed it)."""

    @property
    def names(self) -> ClassNames:
        """The class names of the version served now."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def ready(self) -> bool: ...
    async def predict(self, image: bytes, group: Hashable | None = None) -> Answer:
        """One image's answer. A request's images share a `group`: a backend that queues
        images (the local one) takes groups in turn, so a large request does not hold a small
        one up behind all of its images."""

    def metadata(self) -> dict[str, Any]: ...


def make_backend(
    settings: Settings,
    on_batch: Callable[[float], None] | None = None,
    on_latency: Callable[[float], None] | None = None,
) -> Backend:
    """The backend `settings.resolved_backend()` names: each reports how long its model calls
    take (`on_latency`: TF Serving's answer to an image), the local one also its batches."""
    kind = settings.resolved_backend()
    if kind == "tfserving-rest":
        from tf_alexnet_serving.tfserving_rest import RestBackend

        return RestBackend(settings, on_latency=on_latency)
    if kind == "tfserving-grpc":  # grpc and TF Serving's stubs only where they are used
        from tf_alexnet_serving.tfserving_grpc import GrpcBackend

        return GrpcBackend(settings, on_latency=on_latency)
    return LocalBackend(settings, on_batch=on_batch, on_latency=on_latency)
