"""Micro-batching: concurrent requests share one model call, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any


class QueueFull(Exception):
    """The queue holds `max_queue` items already: the caller should come back later."""


class DeadlineExceeded(Exception):
    """An item waited and ran for longer than `timeout_s`."""


class TakeTurns:
    """A queue of entries in groups, taken one group at a time in turn (first come, first
    served within a group, and between groups of one entry each).

    So a request of 16 large images cannot make a one-image request wait for all 16: each
    model call takes an image from each waiting request in turn.
    """

    def __init__(self) -> None:
        self._lines: OrderedDict[Hashable, deque[Any]] = OrderedDict()  # in turn order
        self._size = 0
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return self._size

    def put(self, group: Hashable, entry: Any) -> None:
        self._lines.setdefault(group, deque()).append(entry)
        self._size += 1
        self._arrived.set()

    def peek(self) -> Any:
        """The entry `get_nowait` would take next (it stays queued)."""
        if not self._size:
            raise asyncio.QueueEmpty
        return next(iter(self._lines.values()))[0]

    def get_nowait(self) -> Any:
        if not self._size:
            raise asyncio.QueueEmpty
        group, line = self._lines.popitem(last=False)
        self._size -= 1
        entry = line.popleft()
        if line:  # its next entry waits for the other groups' turns
            self._lines[group] = line
        return entry

    async def wait(self) -> None:
        """Returns once an entry is queued."""
        while not self._size:
            self._arrived.clear()
            await self._arrived.wait()

    async def get(self) -> Any:
        await self.wait()
        return self.get_nowait()


class MicroBatcher:
    """Collects items for up to `max_wait_s` (or `max_batch_size` items), runs them together.

    It waits only for items it expects: as many as the last batch answered plus those that
    queued meanwhile (clients in a closed loop come back). So one client alone is never kept
    waiting `max_wait_s` for company that cannot come, while callers that come back within
    `max_wait_s` still share a call. (Measured on 2 cores, d2l at 224 px, 32 clients in a
    closed loop, 2 ms default: batches of 32, one at a time, gave more images per second than
    a cap of 16, and than two batches in flight, with one or two TensorFlow threads each;
    see docs/benchmarks/facade_cost_*.md.)

    Items submitted with the same `group` (one request's images) take turns with other
    groups' (`TakeTurns`); an item without a group is a group of its own. With `cost` and
    `max_batch_cost`, a batch also stops before an item would take its summed cost past the
    budget (its first item always goes): a request of 16 images of 25 MP was one model call of
    4.5 s, and a one-image request that came 0.5 s later waited for all of it.

    `run` takes a list of items and returns one result per item; it runs in a worker thread,
    so inference never blocks the event loop. When a batch fails, its items are retried one
    by one, so one bad item fails alone. At most `max_queue` items wait (beyond that, `submit`
    raises `QueueFull` at once), and an item that has no result after `timeout_s` raises
    `DeadlineExceeded` and is dropped from the queue if it has not started.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], Iterable[Any]],
        max_batch_size: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
        *,
        max_queue: int = 0,
        timeout_s: float | None = None,
        cost: Callable[[Any], int] | None = None,
        max_batch_cost: int | None = None,
    ) -> None:
        self._run = run
        self._cost = cost
        self._max_batch_cost = max_batch_cost
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._timeout_s = timeout_s
        self._max_queue = max_queue
        self._queue = TakeTurns()  # of (item, future)
        self._waiting: set[asyncio.Future[Any]] = set()  # queued, not given up, not started
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Items waiting for a model call."""
        return len(self._waiting)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, item: Any, group: Hashable | None = None) -> Any:
        if self._max_queue and len(self._waiting) >= self._max_queue:
            raise QueueFull(f"{self._max_queue} images are waiting already")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.add(future)
        self._queue.put(future if group is None else group, (item, future))
        try:
            return await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError:  # wait_for cancelled the future: the loop skips it
            raise DeadlineExceeded(f"no result within {self._timeout_s:g} s") from None
        finally:
            self._waiting.discard(future)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        expected = 1  # items the next batch should hold: see the class docstring
        while True:
            batch = [await self._queue.get()]
            spent = self._cost_of(batch[0])
            deadline = loop.time() + self._max_wait_s
            target = min(self._max_batch_size, expected)
            while len(batch) < self._max_batch_size:
                remaining = deadline - loop.time()
                if not len(self._queue):
                    if remaining <= 0 or len(batch) >= target:  # take what is queued, no wait
                        break
                    try:
                        await asyncio.wait_for(self._queue.wait(), remaining)
                    except TimeoutError:
                        break
                cost = self._cost_of(self._queue.peek())
                if self._max_batch_cost is not None and spent + cost > self._max_batch_cost:
                    break  # it leads the next batch
                batch.append(self._queue.get_nowait())
                spent += cost
            batch = [(item, future) for item, future in batch if not future.done()]
            self._waiting.difference_update(future for _, future in batch)
            if not batch:  # every caller gave up while waiting
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch))
            results = await asyncio.to_thread(self._run_safely, [item for item, _ in batch])
            expected = max(1, len(batch) + len(self._queue))
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _cost_of(self, entry: tuple[Any, asyncio.Future[Any]]) -> int:
        if self._cost is None:
            return 0
        try:
            return self._cost(entry[0])
        except Exception:  # never the loop's end: an item of unknown cost costs nothing
            return 0

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
