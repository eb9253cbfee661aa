"""``hubbub.futures``: how the connect path passes a store's answer from one future to the next.

Each case is one outcome of the source (answered, failed, cancelled) and a target whose
waiter gave up (already done), which must be left as it is, not raise inside the callback.
"""

from __future__ import annotations

import asyncio
import functools

import pytest

from hubbub.futures import forward, passed_failure


def _futures() -> tuple[asyncio.Future[int], asyncio.Future[int]]:
    loop = asyncio.get_running_loop()
    return loop.create_future(), loop.create_future()


async def test_an_answer_is_forwarded() -> None:
    source, target = _futures()
    source.add_done_callback(functools.partial(forward, target))
    source.set_result(7)
    assert await target == 7


async def test_a_failure_is_forwarded() -> None:
    source, target = _futures()
    source.add_done_callback(functools.partial(forward, target))
    source.set_exception(ConnectionResetError("the store went away"))
    with pytest.raises(ConnectionResetError, match="the store went away"):
        await target


async def test_a_cancellation_is_forwarded() -> None:
    source, target = _futures()
    source.add_done_callback(functools.partial(forward, target))
    source.cancel()
    with pytest.raises(asyncio.CancelledError):
        await target


@pytest.mark.parametrize("outcome", ["answer", "failure", "cancel"])
async def test_a_target_already_done_is_left_alone(outcome: str) -> None:
    source, target = _futures()
    source.add_done_callback(functools.partial(forward, target))
    called = asyncio.Event()  # set by the callback after ``forward``'s: it has run
    source.add_done_callback(lambda _: called.set())
    target.set_result(1)  # the waiter gave up first
    if outcome == "answer":
        source.set_result(2)
    elif outcome == "failure":
        source.set_exception(ValueError("late"))
    else:
        source.cancel()
    await called.wait()
    assert target.result() == 1


async def test_passed_failure_says_whether_an_answer_is_left_to_act_on() -> None:
    source, target = _futures()
    source.set_result(3)
    assert not passed_failure(target, source)
    assert not target.done()
    failed, target = _futures()
    failed.set_exception(ValueError("no"))
    assert passed_failure(target, failed)
    assert isinstance(target.exception(), ValueError)
