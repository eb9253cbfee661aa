"""The least interval between commits: a batch gathers what comes meanwhile; a lone message never waits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

import persister
from hubbub.envelope import AcceptedMessage, CommitResult
from persister import LocalAcceptedLog, Persister, SqlMessageStore
from persister.sql_database import create_engine
from tests.support.schema import migrate


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


async def test_the_next_commit_gathers_what_comes_within_the_interval() -> None:
    # In memory (committed on the engine, no writer process): a warm commit lasts far less than
    # the interval, which is long enough for the few event-loop turns below however loaded the machine.
    engine = create_engine("sqlite+aiosqlite://")
    await migrate(engine, persister.MIGRATIONS)
    store = SqlMessageStore(engine)
    accepted = LocalAcceptedLog(100)
    deliveries = _Deliveries()
    paced = Persister(
        store, accepted, deliveries.on_committed, commits_in_flight=1, min_commit_interval_s=1.0
    )
    running = asyncio.create_task(paced.run())
    try:
        for index in range(2):  # the first commits warm the store up
            assert accepted.offer(_accepted(index)) is None
            await deliveries.delivered.get()
        assert accepted.offer(_accepted(2)) is None
        for _ in range(5):  # turns in which, without the interval, message 2 would be taken alone
            await asyncio.sleep(0)
        for index in range(3, 6):
            assert accepted.offer(_accepted(index)) is None
        await deliveries.delivered.get()
    finally:
        await _stop(running)
        await store.close()
        await engine.dispose()
    assert deliveries.batches == [[1], [2], [3, 4, 5, 6]]
