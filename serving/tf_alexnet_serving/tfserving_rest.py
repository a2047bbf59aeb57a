"""A backend that calls TF Serving's REST API with a pooled async httpx client."""

from __future__ import annotations

import base64
from collections.abc import Hashable
from typing import Any

import httpx
import numpy as np

from tf_alexnet import contract
from tf_alexnet_serving import classes
from tf_alexnet_serving.errors import (
    UpstreamError,
    check_bytes_input,
    none_available,
    refused_by_tfserving,
)
from tf_alexnet_serving.settings import Settings


class RestBackend:
    """`POST /v1/models/NAME[/versions/N|/labels/L]:predict` with `{"instances": [{"b64"}]}`."""

    def __init__(self, settings: Settings) -> None:
        if not settings.tfserving_rest_url:
            raise ValueError("tfserving_rest_url is not set.")
        self.name = settings.model_name
        self.version = 0  # learnt from the model status
        self.names = classes.ClassNames(settings.class_names)
        self._names_version = 0  # the version whose class names `names` holds
        self._base_url = f"{settings.tfserving_rest_url.rstrip('/')}/v1/models/{self.name}"
        self._label = settings.model_label if not settings.model_version else None
        self._model_url = (
            f"{self._base_url}/versions/{settings.model_version}"
            if settings.model_version
            else f"{self._base_url}/labels/{self._label}"
            if self._label
            else self._base_url
        )
        # TF Serving's model status narrows to a version, never to a label: it lists every
        # version whatever the label (get_model_status_impl.cc), and the label's version comes
        # from the metadata, which resolves it.
        self._status_url = self._base_url if self._label else self._model_url
        self.unavailable_reason = ""
        self._foreign = False  # the version served is not an export (it takes no image bytes)
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_s, limits=httpx.Limits(max_connections=64)
        )

    async def start(self) -> None:
        await self.ready()  # learn the served version; readiness is asked again by /readyz

    async def stop(self) -> None:
        await self._client.aclose()

    async def ready(self) -> bool:
        """Whether the configured version (the newest, a number, or a label's) is available;
        when it is not, `unavailable_reason` says why."""
        try:
            response = await self._client.get(self._status_url)
        except httpx.HTTPError as err:
            self.unavailable_reason = f"TF Serving is unreachable: {type(err).__name__}."
            return False
        if response.status_code != 200:
            self.unavailable_reason = _upstream_error(response).message
            return False
        try:
            statuses = [
                (int(status["version"]), status.get("state", ""), _error_message(status))
                for status in response.json().get("model_version_status", [])
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            self.unavailable_reason = (
                f"TF Serving's model status is unreadable: {response.text[:200]}"
            )
            return False
        available = [version for version, state, _ in statuses if state == "AVAILABLE"]
        if not available:
            self.unavailable_reason = none_available(statuses)
            return False
        version = max(available)
        if self._label:
            try:
                version = await self._label_version()
            except UpstreamError as err:
                self.unavailable_reason = err.message
                return False
        self.version = version
        if self.version != self._names_version:
            try:
                await self._learn_classes()
            except UpstreamError as err:
                self.unavailable_reason = err.message
                return False
        self.unavailable_reason = ""
        return True

    async def _label_version(self) -> int:
        """The version the configured label points at, from its metadata."""
        try:
            response = await self._client.get(f"{self._model_url}/metadata")
        except httpx.HTTPError as err:
            raise UpstreamError(503, f"TF Serving is unreachable: {type(err).__name__}.") from None
        if response.status_code != 200:
            raise _upstream_error(response)
        try:
            return int(response.json()["model_spec"]["version"])
        except (ValueError, KeyError, TypeError):
            raise UpstreamError(
                503, f"TF Serving's metadata names no version: {response.text[:200]}"
            ) from None

    async def _learn_classes(self) -> None:
        """The served version's class count (its metadata), then a few names (a probe)."""
        version = self.version
        try:
            response = await self._client.get(f"{self._base_url}/versions/{version}/metadata")
            response.raise_for_status()
            signature_defs = response.json()["metadata"]["signature_def"]["signature_def"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            count = None  # learnt from the first answer instead
        else:
            signature = signature_defs.get(contract.SIGNATURE_IMAGE_BYTES)
            self._foreign = False
            try:
                check_bytes_input(signature.get("inputs", {}) if signature else None, version)
            except UpstreamError:
                self._foreign = True
                raise
            count = classes_in_signature_def(signature_defs)
        self.names.reset(count)
        self._names_version = version
        if self.names.problem:
            return
        try:
            for prediction in await self._predict(classes.probe_images()):
                self._learn(prediction)
        except UpstreamError:
            pass  # the names come with the answers

    def _learn(self, prediction: dict[str, Any]) -> bool:
        class_id, name = (
            prediction.get(contract.OUTPUT_CLASS_ID),
            prediction.get(contract.OUTPUT_CLASS_NAME),
        )
        if isinstance(class_id, int) and isinstance(name, str):
            return self.names.learn(class_id, name)
        return True

    async def _predict(self, images: list[bytes]) -> list[dict[str, Any]]:
        body = {
            "signature_name": contract.SIGNATURE_IMAGE_BYTES,
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
        }
        try:
            response = await self._client.post(f"{self._model_url}:predict", json=body)
        except httpx.TimeoutException:
            raise UpstreamError(504, "TF Serving did not answer in time.") from None
        except httpx.HTTPError as err:
            raise UpstreamError(503, f"TF Serving is unreachable: {type(err).__name__}.") from None
        if response.status_code != 200:
            raise _upstream_error(response)
        predictions: list[dict[str, Any]] = response.json()["predictions"]
        return predictions

    async def predict(self, image: bytes, group: Hashable | None = None) -> classes.Answer:
        """(`group` is not used: TF Serving queues each call as it comes.)"""
        if self._foreign and not await self.ready():  # unless another version serves now
            raise UpstreamError(503, self.unavailable_reason)
        (prediction,) = await self._predict([image])
        probabilities = np.asarray(prediction[contract.OUTPUT_PROBABILITIES], np.float32)
        if len(probabilities) != self.names.count or not self._learn(prediction):
            await self.ready()  # another version answered: learn its classes, then check again
            if len(probabilities) != self.names.count or not self._learn(prediction):
                self.names.reset(len(probabilities))
                self._learn(prediction)
        return classes.Answer(probabilities, self.version, self.names)  # REST names no version

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "class_names": self.names.as_list(),
            "backend": "tfserving-rest",
        }


def classes_in_signature_def(signature_defs: dict[str, Any]) -> int | None:
    """The width of `probabilities` in the bytes signature (TF Serving's metadata JSON)."""
    try:
        outputs = signature_defs[contract.SIGNATURE_IMAGE_BYTES]["outputs"]
        dims = outputs[contract.OUTPUT_PROBABILITIES]["tensor_shape"]["dim"]
        size = int(dims[-1]["size"])
    except (KeyError, IndexError, ValueError, TypeError):
        return None  # learnt from the first answer instead
    return size if size > 0 else None


def _error_message(status: dict[str, Any]) -> str:
    found = status.get("status")
    return str(found.get("error_message", "")) if isinstance(found, dict) else ""


def _upstream_error(response: httpx.Response) -> UpstreamError:
    try:
        message = str(response.json().get("error", response.text))
    except ValueError:
        message = response.text
    if response.status_code == 400:
        return refused_by_tfserving(message)
    if response.status_code == 404:
        return UpstreamError(503, f"TF Serving has no such model: {message}")
    if response.status_code == 504:
        return UpstreamError(504, f"TF Serving timed out: {message}")
    if response.status_code in (429, 503):  # RESOURCE_EXHAUSTED, UNAVAILABLE (a full queue)
        return UpstreamError(503, f"TF Serving is overloaded: {message}", retry_after=1)
    return UpstreamError(503, f"TF Serving failed ({response.status_code}): {message}")
