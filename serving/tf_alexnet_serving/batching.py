"""Micro-batching: concurrent requests share one model call, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any


class MicroBatcher:
    """Collects items for up to `max_wait_s` (or `max_batch_size` items), runs them together.

    `run` takes a list of items and returns one result per item; it runs in a worker thread,
    so inference never blocks the event loop. When a batch fails, its items are retried one
    by one, so one bad item fails alone.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], Iterable[Any]],
        max_batch_size: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, item: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait_s
            while len(batch) < self._max_batch_size:
                remaining = deadline - loop.time()
                try:
                    if remaining <= 0:
                        batch.append(self._queue.get_nowait())
                    else:
                        batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            if self._on_batch is not None:
                self._on_batch(len(batch))
            results = await asyncio.to_thread(self._run_safely, [item for item, _ in batch])
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _run_safely(self, items: list[Any]) -> list[Any]:
        try:
            return list(self._run(items))
        except Exception as err:
            if len(items) == 1:
                return [err]
            return [self._run_one(item) for item in items]

    def _run_one(self, item: Any) -> Any:
        try:
            return next(iter(self._run([item])))
        except Exception as err:
            return err
