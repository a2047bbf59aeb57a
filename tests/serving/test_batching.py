"""The micro-batcher under bad items and uneven costs: a failing batch is split in halves, so
a bad item fails alone in few model calls; a small item rides along with a large one rather
than waiting for every large one queued before it."""

import asyncio
import time

import pytest
from tf_alexnet_serving.batching import MicroBatcher

pytestmark = pytest.mark.timeout(60)


def _run_batch(batcher, items, groups=None):
    """Submits `items` at once (so they share one batch), each in its own group unless
    `groups` says otherwise; their results or exceptions, in order."""

    async def main():
        batcher.start()
        try:
            found = groups or [None] * len(items)
            calls = (batcher.submit(item, group) for item, group in zip(items, found, strict=True))
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(asyncio.wait_for(main(), 20))


def _failing_run(calls, bad):
    """A model that records each call's items and fails a call that holds a bad one."""

    def run(items):
        calls.append(list(items))
        if any(item in bad for item in items):
            raise ValueError(f"cannot read {items if len(items) > 1 else items[0]}")
        return [item * 10 for item in items]

    return run


@pytest.mark.parametrize(
    ("bad", "most_calls"),
    [({17}, 2 * 5 + 1), ({5, 20}, 19)],  # one bad: 2*log2(32) after the first call
    ids=["one_bad", "two_bad"],
)
def test_a_failing_batch_is_halved_so_a_bad_item_fails_alone_in_few_calls(bad, most_calls):
    """32 items, one (or two) of them bad: the batch fails, then its halves are run and a
    failing half halved again; retrying every item alone took 33 calls, and two clients
    sending truncated JPEGs among 32 halved the good ones' throughput."""
    calls = []
    batcher = MicroBatcher(_failing_run(calls, bad), max_batch_size=32, max_wait_s=1.0)
    results = _run_batch(batcher, list(range(32)))
    assert calls[0] == list(range(32))  # one batch, as without a bad item
    for item, result in enumerate(results):
        if item in bad:
            assert isinstance(result, ValueError) and str(result) == f"cannot read {item}"
        else:
            assert result == item * 10
    assert len(calls) <= most_calls, [len(call) for call in calls]


def test_when_every_item_fails_each_gets_its_own_error_in_fewer_than_two_calls_each():
    """A broken model fails every call: each item still gets an error from a call of its own
    (not its batch's), and splitting stops at single items, in fewer than 2n calls. (The old
    one-by-one retry made n + 1 calls, within this bound too: this guards the halving.)"""
    calls = []
    items = list(range(32))
    batcher = MicroBatcher(_failing_run(calls, set(items)), max_batch_size=32, max_wait_s=1.0)
    results = _run_batch(batcher, items)
    assert [str(result) for result in results] == [f"cannot read {item}" for item in items]
    assert len({id(result) for result in results}) == len(items)  # one exception each
    assert calls[0] == items and len(calls) < 2 * len(items), len(calls)
    assert sorted(call[0] for call in calls if len(call) == 1) == items  # each alone once


def test_a_small_item_rides_along_with_a_large_one_instead_of_waiting_for_all_of_them():
    """5 large items (20 of a budget of 25: one per call) queued while a sixth runs, then 3
    small ones (1 each): the small ones go in the first calls that have room for them, with
    the next large item, not after all the large ones (a 1.5 KB JPEG behind 8 PNG bombs
    waited 7.6 s). The large ones still lead their calls in the order they came (none is
    passed over for good), and a call holds at most max_batch_size items."""
    batches = []

    def run(items):
        batches.append(list(items))
        time.sleep(0.05)
        return [item.upper() for item in items]

    def cost(item):
        return 20 if item.startswith("big") else 1

    async def main():
        batcher = MicroBatcher(run, 3, max_wait_s=0, cost=cost, max_batch_cost=25)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit("big0"))
            await asyncio.sleep(0.02)  # its model call runs meanwhile: the others queue
            queued = [batcher.submit(f"big{i}") for i in range(1, 6)]
            queued += [batcher.submit(f"small{i}") for i in range(3)]
            return [await first, *await asyncio.gather(*queued)]
        finally:
            await batcher.stop()

    results = asyncio.run(asyncio.wait_for(main(), 20))
    assert results == [f"BIG{i}" for i in range(6)] + [f"SMALL{i}" for i in range(3)]
    assert batches[0] == ["big0"]
    assert batches[1] == ["big1", "small0", "small1"]  # max_batch_size 3: small2 goes next
    assert batches[2] == ["big2", "small2"]
    assert [batch[0] for batch in batches] == [f"big{i}" for i in range(6)]
    assert all(sum(map(cost, batch)) <= 25 and len(batch) <= 3 for batch in batches)
