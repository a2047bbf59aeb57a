"""A backend that calls TF Serving's REST API with a pooled async httpx client."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Hashable
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
from tf_alexnet_serving.tfserving_status import WatchedModel

NOT_HTTP_1 = (
    "It does not answer in HTTP/1.1: is TFSERVING_REST_URL TF Serving's REST port (8501), not "
    "its gRPC port (8500)?"
)


class RestBackend(WatchedModel):
    """`POST /v1/models/NAME[/versions/N|/labels/L]:predict` with `{"instances": [{"b64"}]}`."""

    def __init__(
        self, settings: Settings, on_latency: Callable[[float], None] | None = None
    ) -> None:
        """`on_latency` gets the seconds of each answer to a client's image (the facade's
        `tf_alexnet_backend_seconds`)."""
        if not settings.tfserving_rest_url:
            raise ValueError("tfserving_rest_url is not set.")
        super().__init__(settings, "tfserving-rest")
        self._base_url = f"{settings.tfserving_rest_url.rstrip('/')}/v1/models/{self.name}"
        self._timeout_s = settings.timeout_s
        self._on_latency = on_latency
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
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_s, limits=httpx.Limits(max_connections=64)
        )

    async def _close(self) -> None:
        await self._client.aclose()

    async def _learn_version(self) -> None:
        """The version served and its classes, from TF Serving (raises UpstreamError); REST
        answers name no version, so a new one is found by asking."""
        response = await self._send("GET", self._status_url)
        if response.status_code != 200:
            raise _upstream_error(response)
        try:
            document = response.json()
        except ValueError:  # a web page, another service on the port
            raise UpstreamError(
                503, f"The server at TFSERVING_REST_URL is not TF Serving: {_excerpt(response)}"
            ) from None
        try:
            statuses = [
                (int(status["version"]), status.get("state", ""), _error_message(status))
                for status in document.get("model_version_status", [])
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpstreamError(
                503, f"TF Serving's model status is unreadable: {response.text[:200]}"
            ) from None
        available = [version for version, state, _ in statuses if state == "AVAILABLE"]
        if not available:
            raise UpstreamError(503, none_available(statuses), retry_after=1)
        self.version = await self._label_version() if self._label else max(available)
        if self.version != self._names_version:
            await self._learn_classes()

    async def _label_version(self) -> int:
        """The version the configured label points at, from its metadata."""
        response = await self._send("GET", f"{self._model_url}/metadata")
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
            response = await self._send("GET", f"{self._base_url}/versions/{version}/metadata")
            response.raise_for_status()
            signature_defs = response.json()["metadata"]["signature_def"]["signature_def"]
            signature = signature_defs.get(contract.SIGNATURE_IMAGE_BYTES)
            inputs = signature.get("inputs", {}) if signature else None
            if inputs is not None and not isinstance(inputs, dict):
                raise TypeError
        except (UpstreamError, httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            count = None  # learnt from the first answer instead (metadata not TF Serving's)
        else:
            self._foreign = False
            try:
                check_bytes_input(inputs, version)
            except UpstreamError:
                self._foreign = True
                raise
            count = classes_in_signature_def(signature_defs)

        async def probe(images: list[bytes]) -> list[tuple[int, str]]:
            predictions = await self._predict(images, self._url_of(version))
            return [pair for pair in map(_named, predictions) if pair is not None]

        await classes.learn_names(self.names, count, probe)
        self._names_version = version

    def _learn(self, prediction: dict[str, Any]) -> bool:
        pair = _named(prediction)
        return self.names.learn(*pair) if pair is not None else True

    def _asker(
        self, images: list[bytes], version: int
    ) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
        """A call that asks `version` for `images` again."""
        return lambda: self._predict(images, self._url_of(version))

    def _url_of(self, version: int) -> str:
        """Where to ask `version`. REST answers name no version: asking for the version by
        number makes the answer's version known."""
        return f"{self._base_url}/versions/{version}"

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One call to TF Serving, answered in full within `timeout_s` (raises UpstreamError).
        httpx's timeout bounds each wait (a connection from the pool, each read), not the
        call: an answer that came a few bytes at a time held the request for as long as it
        lasted (hours), and /readyz with it."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._client.request(method, url, **kwargs)
        except TimeoutError:
            raise self._late() from None
        except httpx.HTTPError as err:
            raise self._failed_call(err) from None

    def _late(self) -> UpstreamError:
        return UpstreamError(504, f"TF Serving did not answer within {self._timeout_s:g} s.")

    def _failed_call(self, err: httpx.HTTPError) -> UpstreamError:
        if isinstance(err, httpx.TimeoutException):
            return self._late()
        # httpx's own words (a TLS failure, a refused port), some with a full stop of their own
        detail = str(err).strip()[:200].rstrip(".")
        reason = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
        hint = ""
        if isinstance(err, httpx.RemoteProtocolError) and "disconnected" not in detail:
            hint = f" {NOT_HTTP_1}"  # "illegal request line" said nothing of the likely cause
        return UpstreamError(503, f"TF Serving is unreachable: {reason}.{hint}", retry_after=1)

    async def _predict(self, images: list[bytes], url: str) -> list[dict[str, Any]]:
        body = {
            "signature_name": contract.SIGNATURE_IMAGE_BYTES,
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
        }
        response = await self._send("POST", f"{url}:predict", json=body)
        if response.status_code != 200:
            found = _upstream_error(response)
            if response.status_code == 404:
                raise _VersionGone(found.status, found.message)
            raise found
        try:
            predictions = response.json()["predictions"]
            probabilities = [row[contract.OUTPUT_PROBABILITIES] for row in predictions]
            if len(predictions) != len(images) or not all(
                isinstance(row, list) and all(isinstance(p, int | float) for p in row)
                for row in probabilities
            ):
                raise TypeError
        except (ValueError, KeyError, TypeError, IndexError):
            raise UpstreamError(
                503, f"TF Serving's answer holds no predictions: {_excerpt(response)}"
            ) from None
        return list(predictions)

    async def probe(self) -> None:
        """Raises UpstreamError unless the served version answers a known-good image."""
        await self._predict(classes.probe_images()[:1], self._url_of(self.version))

    async def predict(self, image: bytes, group: Hashable | None = None) -> classes.Answer:
        """(`group` is not used: TF Serving queues each call as it comes.)"""
        if failure := self.failing_fast():  # under Compose, with TF Serving's container
            raise failure  # down, a request waited 10 s for its name not to resolve
        # Not before the version served and its classes are known (learnt at start, in the
        # background, and again after TF Serving was unavailable), and not a version known
        # not to be an export, unless another one serves now.
        if (
            self._foreign or not self.version or self._names_version != self.version
        ) and not await self.ready():
            raise self._unavailable()
        for attempt in range(2):
            version = self.version
            try:
                start = time.perf_counter()
                (prediction,) = await self._predict([image], self._url_of(version))
                if self._on_latency is not None:
                    self._on_latency(time.perf_counter() - start)
                break
            except _VersionGone:
                # Unloaded since the last ask (a newer one replaced it): ask again, once.
                if attempt:
                    raise
                if not await self._check(fresh=True):  # a status read before the 404 is stale
                    raise self._unavailable() from None
            except UpstreamError as err:
                if err.status != 400:
                    raise
                (prediction,) = await self._refused(err, self._asker([image], version))
                break
        probabilities = np.asarray(prediction[contract.OUTPUT_PROBABILITIES], np.float32)
        if len(probabilities) != self.names.count or not self._learn(prediction):
            await self.ready()  # another version answered: learn its classes, then check again
            if len(probabilities) != self.names.count or not self._learn(prediction):
                self.names.reset(len(probabilities))
                self._learn(prediction)
        return classes.Answer(probabilities, version, self.names)

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


def _named(prediction: dict[str, Any]) -> tuple[int, str] | None:
    """(class id, class name) of one answer, when it names them."""
    class_id = prediction.get(contract.OUTPUT_CLASS_ID)
    name = prediction.get(contract.OUTPUT_CLASS_NAME)
    return (class_id, name) if isinstance(class_id, int) and isinstance(name, str) else None


class _VersionGone(UpstreamError):
    """TF Serving answered 404: no such model or version (anymore)."""


def _excerpt(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "no content type")
    return f"HTTP {response.status_code}, {kind}, {response.text[:100]!r}"


def _upstream_error(response: httpx.Response) -> UpstreamError:
    try:
        message = str(response.json()["error"])  # TF Serving's errors: {"error": "..."}
    except (ValueError, KeyError, TypeError):
        return UpstreamError(
            503, f"The server at TFSERVING_REST_URL is not TF Serving: {_excerpt(response)}"
        )
    if response.status_code == 400:
        return refused_by_tfserving(message)
    if response.status_code == 404:
        return UpstreamError(503, f"TF Serving has no such model or version: {message}")
    if response.status_code == 504:
        return UpstreamError(504, f"TF Serving timed out: {message}")
    if response.status_code in (429, 503):  # RESOURCE_EXHAUSTED, UNAVAILABLE (a full queue)
        return UpstreamError(503, f"TF Serving is overloaded: {message}", retry_after=1)
    return UpstreamError(503, f"TF Serving failed ({response.status_code}): {message}")
