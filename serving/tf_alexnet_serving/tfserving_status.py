"""What both TF Serving backends share: a model status watched in the background, readiness
checks shared while one runs, and the last failure answered at once while it stands."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from tf_alexnet_serving.classes import ClassNames
from tf_alexnet_serving.errors import UpstreamError, image_or_model
from tf_alexnet_serving.logs import ModelEvents
from tf_alexnet_serving.settings import Settings

T = TypeVar("T")


class WatchedModel:
    """The served version of a model in TF Serving, learnt at start and checked again every
    `model_poll_s` in the background. A subclass learns the version and its classes
    (`_learn_version`, raising `UpstreamError`) and closes its connection (`_close`).

    Answers name their version, but only a check finds TF Serving gone (so that requests need
    not wait `timeout_s` each for the same failure: `failing_fast`) or back (so that the model
    log says so without a request or a /readyz).
    """

    def __init__(self, settings: Settings, backend: str) -> None:
        self.name = settings.model_name
        self.version = 0  # learnt from the model status
        self.names = ClassNames(settings.class_names)
        self._names_version = 0  # the version whose class names `names` holds
        self._label = settings.model_label
        self._poll_s = settings.model_poll_s
        self._watcher: asyncio.Task[None] | None = None
        self._check = SharedCheck(self._checked)
        self.unavailable_reason = ""
        self.failure: UpstreamError | None = None  # why `ready()` last answered False
        self._foreign = False  # the version served is not an export (it takes no image bytes)
        self._events = ModelEvents(self.name, backend)
        self._alone = asyncio.Lock()  # one image asked again at a time (`_refused`)

    async def start(self) -> None:
        """Learns the served version in the background (the facade listens at once, even
        while TF Serving is slow to answer), then again every `model_poll_s`."""
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._check.cancel()
        await self._close()

    async def _watch(self) -> None:
        await self.ready()
        while self._poll_s > 0:
            await asyncio.sleep(self._poll_s)
            await self.ready()

    async def ready(self) -> bool:
        """Whether the configured version (the newest, a number, or a label's) is available;
        when it is not, `unavailable_reason` says why. One check at a time: a caller that
        comes while one runs gets its answer (`SharedCheck`)."""
        return await self._check()

    async def _checked(self) -> bool:
        try:
            await self._learn_version()
        except UpstreamError as err:
            self.failure, self.unavailable_reason = err, err.message
            self._names_version = 0  # TF Serving may come back with another model as this version
            self._events.unavailable(err.message)
            return False
        self.failure, self.unavailable_reason = None, ""
        self._events.available(self.version, self.names.count)
        return True

    async def _refused(self, refusal: UpstreamError, again: Callable[[], Awaitable[T]]) -> T:
        """The answer to an image TF Serving refused as invalid (`refusal`, a 400): raises a
        503 when the model is at fault (`image_or_model`), else asks `again()` for the image
        alone and raises `refusal` if it is refused again. With batching on (the compose
        stack's), TF Serving runs concurrent requests as one batch and gives the batch's
        failure to every request in it (batching_session.cc): one image it cannot decode got
        the other clients' good images answered "could not be decoded". One image is asked
        again at a time, so that the images of a failed batch do not share a batch again."""
        found = await image_or_model(refusal, self)
        if found.status != 400:
            raise found from None
        async with self._alone:
            try:
                return await again()
            except UpstreamError as err:
                raise (found if err.status == 400 else err) from None

    def failing_fast(self) -> UpstreamError | None:
        """While the last check found the model unavailable and the watcher checks again every
        `model_poll_s`, the error to answer now rather than wait for the same failure (with
        TF Serving silent, each request waited `timeout_s` for its own); else None."""
        if self.failure is None or self._poll_s <= 0:
            return None
        return self._unavailable()

    def _unavailable(self) -> UpstreamError:
        """Why the last `ready()` answered False, as a new error (504 when TF Serving did not
        answer in time, 503 otherwise)."""
        failure = self.failure or UpstreamError(503, self.unavailable_reason)
        return UpstreamError(failure.status, failure.message, failure.retry_after)

    async def _learn_version(self) -> None:
        """The version served and its classes, from TF Serving (raises UpstreamError)."""
        raise NotImplementedError

    async def probe(self) -> None:
        """Raises UpstreamError unless the served version answers a known-good image."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Closes the connection to TF Serving."""
        raise NotImplementedError


class SharedCheck:
    """A readiness check that runs once at a time: a caller that comes while it runs gets its
    answer rather than a check of its own after it. One at a time, each caller waited for the
    checks before its own: with TF Serving silent (SIGSTOP, a hung host), four probes of
    /readyz answered after 1, 2, 3 and 4 times TIMEOUT_S. The check runs as a task of its own,
    so a caller that gives up (a probe's client disconnects) does not cancel it for the
    others."""

    def __init__(self, check: Callable[[], Coroutine[Any, Any, bool]]) -> None:
        self._check = check
        self._running: asyncio.Task[bool] | None = None

    async def __call__(self, fresh: bool = False) -> bool:
        """The check's answer; `fresh`: of a check begun after this call (a caller that has
        just seen TF Serving change waits for the one in progress, then shares the next)."""
        running = self._running
        if fresh and running is not None and not running.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._check())
            self._running.add_done_callback(_retrieve)
        return await asyncio.shield(self._running)

    async def cancel(self) -> None:
        """Stops the check in progress, if any (at shutdown)."""
        if self._running is not None and not self._running.done():
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running


def _retrieve(task: asyncio.Task[bool]) -> None:
    """Takes a finished check's exception, so that a check that every caller gave up on does
    not log "exception was never retrieved" (the callers still waiting get it)."""
    if not task.cancelled():
        task.exception()
