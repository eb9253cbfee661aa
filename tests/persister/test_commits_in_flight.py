"""How many batches the persister commits at once: two by default, one for one node's SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.stores import Fence
from persister import LocalAcceptedLog, Persister, SqlMessageStore


def _accepted(index: int) -> AcceptedMessage:
    return AcceptedMessage(1, 1_000 + index, 7, "dev1", f"c{index}", f"m{index}", 1_700_000_000_000)


class _HeldStore(SqlMessageStore):
    """The real store, whose first commit answers only on ``release``; it counts commits running at once."""

    def __init__(self, inner: SqlMessageStore) -> None:
        self._inner = inner
        self.release = asyncio.Event()
        self.started: asyncio.Queue[int] = asyncio.Queue()  # the size of each commit, as it starts
        self._running = 0
        self.most_at_once = 0

    async def commit(
        self, batch: Sequence[AcceptedMessage], *, fence: Fence | None = None
    ) -> list[CommitResult]:
        del fence  # one node: none
        first = self.started.empty() and self.most_at_once == 0
        self._running += 1
        self.most_at_once = max(self.most_at_once, self._running)
        self.started.put_nowait(len(batch))
        try:
            results = await self._inner.commit(batch)
            if first:
                await self.release.wait()  # as if that commit were slow: the persister waits for it
            return results
        finally:
            self._running -= 1


async def _deliveries(
    store: SqlMessageStore, commits_in_flight: int | None
) -> tuple[_HeldStore, list[list[int]], asyncio.Task[None], LocalAcceptedLog, asyncio.Queue[None]]:
    """A persister over a held store, its first batch (one message) committing and held."""
    held = _HeldStore(store)
    accepted = LocalAcceptedLog(100)
    deliveries: list[list[int]] = []
    delivered: asyncio.Queue[None] = asyncio.Queue()

    async def on_committed(results: Sequence[CommitResult]) -> None:
        deliveries.append([result.message.seq for result in results])
        delivered.put_nowait(None)

    persister = (
        Persister(held, accepted, on_committed)
        if commits_in_flight is None
        else Persister(held, accepted, on_committed, commits_in_flight=commits_in_flight)
    )
    running = asyncio.create_task(persister.run())
    assert accepted.offer(_accepted(0)) is None
    assert await held.started.get() == 1
    return held, deliveries, running, accepted, delivered


async def _stop(running: asyncio.Task[None]) -> None:
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_by_default_the_next_batch_commits_while_the_last_one_is_still_committing(
    store: SqlMessageStore,
) -> None:
    held, deliveries, running, accepted, delivered = await _deliveries(store, None)
    try:
        for index in range(1, 10):
            assert accepted.offer(_accepted(index)) is None
        assert await held.started.get() == 9  # started while the first is held
        held.release.set()
        for _ in range(2):
            await delivered.get()
    finally:
        await _stop(running)
    assert held.most_at_once == 2
    assert deliveries == [[1], list(range(2, 11))]  # delivered in commit order all the same


async def test_with_one_in_flight_the_next_batch_gathers_all_that_came_during_the_last_commit(
    store: SqlMessageStore,
) -> None:
    held, deliveries, running, accepted, delivered = await _deliveries(store, 1)
    try:
        for index in range(1, 10):
            assert accepted.offer(_accepted(index)) is None
        held.release.set()
        await delivered.get()
        for index in range(10, 20):  # while the second batch may be committing
            assert accepted.offer(_accepted(index)) is None
        while sum(map(len, deliveries)) < 20:
            await delivered.get()
    finally:
        await _stop(running)
    assert held.most_at_once == 1
    assert [seq for batch in deliveries for seq in batch] == list(range(1, 21))
    assert deliveries[:2] == [[1], list(range(2, 11))]  # nothing of the second batch taken early


async def test_a_persister_commits_at_least_one_batch_at_a_time(store: SqlMessageStore) -> None:
    async def on_committed(_results: Sequence[CommitResult]) -> None:
        return None

    with pytest.raises(ValueError, match="at least one batch"):
        Persister(store, LocalAcceptedLog(1), on_committed, commits_in_flight=0)
