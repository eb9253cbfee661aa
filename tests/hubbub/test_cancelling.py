"""A task that swallows its cancellation (as the NATS client can) is still stopped."""

from __future__ import annotations

import asyncio

import pytest

from hubbub import cancelling

BOUND_S = 30.0  # generous: the stop either returns or never does


async def _swallows_once(started: asyncio.Event, swallowed: asyncio.Event) -> None:
    """A loop whose first cancellation is lost in a library call, as nats-py's flush loses it."""
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        swallowed.set()
    await asyncio.Event().wait()  # carries on as if nothing had been asked


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again_until_it_ends() -> None:
    started, swallowed = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_swallows_once(started, swallowed))
    await started.wait()
    async with asyncio.timeout(BOUND_S):
        await cancelling.stop(task)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_an_error_the_task_ended_with_is_raised_by_stop() -> None:
    async def fails() -> None:
        msg = "broken"
        raise RuntimeError(msg)

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    with pytest.raises(RuntimeError, match="broken"):
        await cancelling.stop(task)


async def test_stopping_no_task_does_nothing() -> None:
    await cancelling.stop(None)
