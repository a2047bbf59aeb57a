"""A backend that calls TF Serving's REST API with a pooled async httpx client."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np

from tf_alexnet import contract
from tf_alexnet_serving.settings import Settings


class UpstreamError(Exception):
    """TF Serving failed; `status` is what the facade answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RestBackend:
    """`POST /v1/models/NAME[/versions/N|/labels/L]:predict` with `{"instances": [{"b64"}]}`."""

    def __init__(self, settings: Settings) -> None:
        if not settings.tfserving_rest_url:
            raise ValueError("tfserving_rest_url is not set.")
        self.name = settings.model_name
        self.version = 0  # learnt from the model status
        self.class_names = tuple(settings.class_names)
        selector = (
            f"/versions/{settings.model_version}"
            if settings.model_version
            else f"/labels/{settings.model_label}"
            if settings.model_label
            else ""
        )
        self._model_url = (
            f"{settings.tfserving_rest_url.rstrip('/')}/v1/models/{self.name}{selector}"
        )
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_s, limits=httpx.Limits(max_connections=64)
        )

    async def start(self) -> None:
        await self.ready()  # learn the served version; readiness is asked again by /readyz

    async def stop(self) -> None:
        await self._client.aclose()

    async def ready(self) -> bool:
        try:
            response = await self._client.get(self._model_url)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        available = [
            int(status["version"])
            for status in response.json().get("model_version_status", [])
            if status.get("state") == "AVAILABLE"
        ]
        if available:
            self.version = max(available)
        return bool(available)

    async def predict(self, image: bytes) -> np.ndarray:
        body = {
            "signature_name": contract.SIGNATURE_IMAGE_BYTES,
            "instances": [{"b64": base64.b64encode(image).decode("ascii")}],
        }
        try:
            response = await self._client.post(f"{self._model_url}:predict", json=body)
        except httpx.TimeoutException:
            raise UpstreamError(504, "TF Serving did not answer in time.") from None
        except httpx.HTTPError as err:
            raise UpstreamError(503, f"TF Serving is unreachable: {type(err).__name__}.") from None
        if response.status_code != 200:
            raise _upstream_error(response)
        (prediction,) = response.json()["predictions"]
        return np.asarray(prediction[contract.OUTPUT_PROBABILITIES], np.float32)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "class_names": list(self.class_names),
            "backend": "tfserving-rest",
        }


def _upstream_error(response: httpx.Response) -> UpstreamError:
    try:
        message = str(response.json().get("error", response.text))
    except ValueError:
        message = response.text
    if response.status_code == 400:
        return UpstreamError(400, message)
    if response.status_code == 404:
        return UpstreamError(503, f"TF Serving has no such model: {message}")
    if response.status_code == 504:
        return UpstreamError(504, f"TF Serving timed out: {message}")
    return UpstreamError(503, f"TF Serving failed ({response.status_code}): {message}")
