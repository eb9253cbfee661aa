"""One node's accepted queue: bounded, taken and settled a batch at a time, no wake-up lost."""

from __future__ import annotations

import asyncio

import pytest

from hubbub.envelope import AcceptedMessage
from persister.local_log import AcceptedQueue, LocalAcceptedLog


def _accepted(index: int) -> AcceptedMessage:
    return AcceptedMessage(1, 100 + index, 7, "dev1", f"c{index}", "text", 1_700_000_000_000)


async def test_batches_come_in_order_and_settled_means_every_batch_settled() -> None:
    log = LocalAcceptedLog(10)
    for index in range(5):
        assert log.offer(_accepted(index)) is None
    first = await log.next_batch(3)
    second = await log.next_batch(3)
    assert [m.cmid for m in first.messages + second.messages] == ["c0", "c1", "c2", "c3", "c4"]
    settled = asyncio.ensure_future(log.settled())
    await first.done([])
    await asyncio.wait([settled], timeout=0)
    assert not settled.done()
    await second.retry(1_000)
    await second.retry(1_000)  # settling twice counts once
    await settled
    assert log.offer(_accepted(5)) is None
    later = asyncio.ensure_future(log.settled())
    await asyncio.wait([later], timeout=0)
    assert not later.done()  # a message offered since is not settled yet
    later.cancel()


async def test_a_full_queue_holds_the_offer_back_until_a_batch_is_taken() -> None:
    log = LocalAcceptedLog(2)
    assert log.offer(_accepted(0)) is None
    assert log.offer(_accepted(1)) is None
    waiting = log.offer(_accepted(2))
    assert waiting is not None
    held = asyncio.ensure_future(waiting)
    await asyncio.wait([held], timeout=0)
    assert not held.done()
    batch = await log.next_batch(10)
    await held
    assert [m.cmid for m in batch.messages] == ["c0", "c1"]
    assert [m.cmid for m in (await log.next_batch(10)).messages] == ["c2"]


async def test_a_getter_cancelled_after_its_wake_up_passes_it_on() -> None:
    queue = AcceptedQueue(4)
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.wait([first, second], timeout=0)  # both wait
    queue.put_nowait(_accepted(0))  # wakes the first ...
    first.cancel()  # ... which is cancelled before it runs
    assert (await second).cmid == "c0"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_it_raises_as_asyncio_queue_does_when_full_or_empty() -> None:
    queue = AcceptedQueue(1)
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(_accepted(0))
    assert (queue.full(), queue.qsize(), queue.empty()) == (True, 1, False)
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(_accepted(1))
    assert queue.take(5) == [_accepted(0)]
    assert queue.take(5) == []
