"""The least interval between commits: a batch gathers what comes meanwhile; a lone message never waits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from hubbub.envelope import AcceptedMessage, CommitResult
from persister import LocalAcceptedLog, Persister, SqlMessageStore


def _accepted(index: int) -> AcceptedMessage:
    return AcceptedMessage(1, 1_000 + index, 7, "dev1", f"c{index}", f"m{index}", 1_700_000_000_000)


class _Deliveries:
    """The seqs of each batch handed on, and a queue that says when one was."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.delivered: asyncio.Queue[None] = asyncio.Queue()

    async def on_committed(self, results: Sequence[CommitResult]) -> None:
        self.batches.append([result.message.seq for result in results])
        self.delivered.put_nowait(None)


async def _stop(running: asyncio.Task[None]) -> None:
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_a_message_after_a_quiet_spell_is_committed_at_once(store: SqlMessageStore) -> None:
    accepted = LocalAcceptedLog(100)
    deliveries = _Deliveries()
    waiting_long = Persister(
        store, accepted, deliveries.on_committed, commits_in_flight=1, min_commit_interval_s=3600
    )
    running = asyncio.create_task(waiting_long.run())
    try:
        assert accepted.offer(_accepted(0)) is None
        await deliveries.delivered.get()  # not an hour later: no commit came before it
    finally:
        await _stop(running)
    assert deliveries.batches == [[1]]


class _HeldPause:
    """The persister's pause, held until the test releases it; says when the persister is in it."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.pausing = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.pausing.set()
        await self.released.wait()


async def test_the_next_commit_gathers_what_comes_within_the_interval(store: SqlMessageStore) -> None:
    accepted = LocalAcceptedLog(100)
    deliveries = _Deliveries()
    pause = _HeldPause()
    paced = Persister(
        store,
        accepted,
        deliveries.on_committed,
        commits_in_flight=1,
        min_commit_interval_s=3600,
        pause=pause,
    )
    running = asyncio.create_task(paced.run())
    try:
        assert accepted.offer(_accepted(0)) is None
        await deliveries.delivered.get()  # the first commit does not wait
        await pause.pausing.wait()  # the next one waits out the interval...
        for index in range(1, 4):
            assert accepted.offer(_accepted(index)) is None  # ...and what comes meanwhile
        pause.released.set()
        await deliveries.delivered.get()
    finally:
        await _stop(running)
    assert deliveries.batches == [[1], [2, 3, 4]]  # one commit for the three
    assert 0 < pause.asked[0] <= 3600  # the rest of the interval since the first commit started
