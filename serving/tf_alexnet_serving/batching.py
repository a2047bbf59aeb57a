"""Micro-batching: concurrent requests share one model call, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
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
    model call takes an image from each waiting request in turn. `take_first` passes over
    groups whose next entry does not fit (they keep their place in turn) to the first whose
    does: a batch that has no room for the next large image still takes a small one.
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

    def get_nowait(self) -> Any:
        if not self._size:
            raise asyncio.QueueEmpty
        return self._take(next(iter(self._lines)))

    def take_first(self, fits: Callable[[Any], bool]) -> Any | None:
        """The next entry of the first group, in turn, whose next entry `fits`: taken, and
        that group's turn passes as with `get_nowait`. None when no group's next entry fits.
        The groups passed over keep their place (the first still goes next), and only each
        group's next entry is looked at, so a group's entries still go in the order they came.
        """
        for group, line in self._lines.items():
            if fits(line[0]):
                return self._take(group)
        return None

    def _take(self, group: Hashable) -> Any:
        line = self._lines.pop(group)
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
    `max_batch_cost`, a batch holds no more than the budget (its first item always goes): a
    request of 16 images of 25 MP was one model call of 4.5 s, and a one-image request that
    came 0.5 s later waited for all of it. A queued item that would take the batch past the
    budget keeps its turn and leads a later batch, while the items after it that still fit
    (each group's next, in turn) join this one: so a small image queued behind large ones
    waits for about one model call, not one per large image queued before it (8 clients
    sending a 24 KB PNG that decodes to 25 MP in 0.94 s made a one-image client wait 7.6 s).
    An item's cost is read once, when it is submitted.

    `run` takes a list of items and returns one result per item; it runs in a worker thread,
    so inference never blocks the event loop. When a batch fails, it is run again in halves,
    a failing half in halves again, down to four items or fewer, which are run one by one: one
    bad item among n fails alone in about 2·log2(n) more calls while the others get their
    results (retrying all one by one, 2 clients sending a truncated JPEG among 32 sending good
    ones halved the good ones' throughput). When every item fails (a broken model, say), each
    gets the error of a call of its own, in fewer than 2n calls. At most `max_queue` items wait
    (beyond that, `submit` raises `QueueFull` at once), and an item that has no result after
    `timeout_s` raises `DeadlineExceeded` and is dropped from the queue if it has not started.
    """

    ONE_BY_ONE = 4
    """A failing batch of this many items or fewer is run one item per call: as few calls as
    halving it when one item is bad, and fewer when more are."""

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
        self._queue = TakeTurns()  # of (item, future, cost)
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
        entry = (item, future, self._cost_of(item))
        self._queue.put(future if group is None else group, entry)
        try:
            return await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError:  # wait_for cancelled the future: the loop skips it
            raise DeadlineExceeded(f"no result within {self._timeout_s:g} s") from None
        finally:
            self._waiting.discard(future)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        expected = 1  # items the next batch should hold: see the class docstring
        budget = math.inf if self._max_batch_cost is None else self._max_batch_cost
        while True:
            batch = [await self._queue.get()]
            spent = batch[0][2]
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
                entry = self._queue.take_first(functools.partial(_fits, budget - spent))
                if entry is None:  # none fits: the first leads the next batch, in turn
                    break
                batch.append(entry)
                spent += entry[2]
            batch = [entry for entry in batch if not entry[1].done()]
            self._waiting.difference_update(future for _, future, _ in batch)
            if not batch:  # every caller gave up while waiting
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch))
            results = await asyncio.to_thread(self._run_safely, [item for item, _, _ in batch])
            expected = max(1, len(batch) + len(self._queue))
            for (_, future, _), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _cost_of(self, item: Any) -> int:
        if self._cost is None:
            return 0
        try:
            return self._cost(item)
        except Exception:  # never the caller's failure: an item of unknown cost costs nothing
            return 0

    def _run_safely(self, items: list[Any]) -> list[Any]:
        """One result or exception per item: see the class docstring for how a failing batch
        is split."""
        try:
            return list(self._run(items))
        except Exception as err:
            if len(items) == 1:
                return [err]
            if len(items) <= self.ONE_BY_ONE:
                return [self._run_one(item) for item in items]
            half = len(items) // 2
            return self._run_safely(items[:half]) + self._run_safely(items[half:])

    def _run_one(self, item: Any) -> Any:
        try:
            return next(iter(self._run([item])))
        except Exception as err:
            return err


def _fits(room: float, entry: tuple[Any, asyncio.Future[Any], int]) -> bool:
    """Whether a queued (item, future, cost) fits in a batch's remaining budget."""
    return entry[2] <= room
