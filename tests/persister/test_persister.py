"""The persister over the real SQLite store: batches, order, failures, flush."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.errors import CommitFailed
from hubbub.stores import Fence, FencedOut
from persister import LocalAcceptedLog, Persister, SqlMessageStore
from persister.persister import retry_after_ms

_STOP_BOUND_S = 30.0  # generous: a stop either ends or never does


def _accepted(index: int, message_id: int | None = None) -> AcceptedMessage:
    return AcceptedMessage(
        1, message_id or 1_000 + index, 7, "dev1", f"c{index}", f"m{index}", 1_700_000_000_000
    )


async def _run(
    store: SqlMessageStore,
    messages: list[AcceptedMessage],
    max_batch: int,
    failed: list[tuple[list[str], int]] | None = None,
) -> list[list[int]]:
    """Queue ``messages``, run the persister until they are all through; the seqs of each delivery.

    The cmids of each failed batch and its retry hint are added to ``failed``.
    """
    accepted = LocalAcceptedLog(len(messages))
    for message in messages:
        assert accepted.offer(message) is None
    deliveries: list[list[int]] = []

    async def on_committed(results: Sequence[CommitResult]) -> None:
        deliveries.append([result.message.seq for result in results])

    def on_failed(batch: Sequence[AcceptedMessage], retry_after_ms: int) -> None:
        if failed is not None:
            failed.append(([message.cmid for message in batch], retry_after_ms))

    persister = Persister(store, accepted, on_committed, on_failed=on_failed, max_batch=max_batch)
    running = asyncio.create_task(persister.run(), name="persister-under-test")
    await persister.flush()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    return deliveries


async def test_batches_are_delivered_once_each_in_commit_order(store: SqlMessageStore) -> None:
    deliveries = await _run(store, [_accepted(i) for i in range(1_000)], max_batch=100)
    assert [len(batch) for batch in deliveries] == [100] * 10
    assert [seq for batch in deliveries for seq in batch] == list(range(1, 1_001))


async def test_a_failed_batch_is_dropped_and_the_rest_go_on_with_dense_seqs(
    store: SqlMessageStore, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [_accepted(i) for i in range(15)]
    messages[7] = _accepted(7, message_id=10**19)  # out of BIGINT range: its whole batch fails
    failed: list[tuple[list[str], int]] = []
    deliveries = await _run(store, messages, max_batch=5, failed=failed)
    assert deliveries == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]  # the middle batch: never delivered
    assert failed == [([f"c{i}" for i in range(5, 10)], 1_000)]  # its senders are told at once
    assert "commit works again after 1 failures" in caplog.text
    page = await store.page(1, limit=20)
    assert [m.cmid for m in page.messages] == [f"c{i}" for i in (*range(5), *range(10, 15))]


def test_the_retry_hint_doubles_with_each_failure_in_a_row_up_to_30_s() -> None:
    assert [retry_after_ms(n) for n in (1, 2, 3, 6, 7, 100)] == [1_000, 2_000, 4_000, 30_000, 30_000, 30_000]


@dataclass
class _Batch:
    """A batch of a source that redelivers (as JetStream does), recording how it was settled."""

    messages: list[AcceptedMessage]
    fence: Fence | None
    settled: asyncio.Queue[str]
    redelivers: bool = True

    async def done(self, results: Sequence[CommitResult]) -> None:
        self.settled.put_nowait(f"done {len(results)}")

    async def retry(self, delay_ms: int) -> None:
        self.settled.put_nowait(f"retry {delay_ms}")

    async def fenced_out(self) -> None:
        self.settled.put_nowait("fenced out")


class _Source:
    def __init__(self, batches: list[_Batch]) -> None:
        self._batches: asyncio.Queue[_Batch] = asyncio.Queue()
        for batch in batches:
            self._batches.put_nowait(batch)

    async def next_batch(self, max_messages: int) -> _Batch:
        batch = await self._batches.get()
        assert len(batch.messages) <= max_messages
        return batch

    async def settled(self) -> None:
        return None


class _RefusingStore(SqlMessageStore):
    """The real store, but the first commits are refused: a newer epoch, then a failing disk."""

    def __init__(self, inner: SqlMessageStore, refusals: list[Exception]) -> None:
        self._inner = inner
        self._refusals = refusals

    async def commit(
        self, batch: Sequence[AcceptedMessage], *, fence: Fence | None = None
    ) -> list[CommitResult]:
        if self._refusals:
            raise self._refusals.pop(0)
        del fence  # the SQL store takes none yet
        return await self._inner.commit(batch)


async def test_a_redelivering_source_is_settled_per_outcome_and_its_senders_are_not_told(
    store: SqlMessageStore,
) -> None:
    settled: asyncio.Queue[str] = asyncio.Queue()
    fence = Fence(shard=3, epoch=9)
    batches = [_Batch([_accepted(i)], fence, settled) for i in range(3)]
    refusing = _RefusingStore(store, [FencedOut("epoch 9 < 10"), CommitFailed("disk full")])
    told: list[AcceptedMessage] = []
    delivered: list[int] = []

    async def on_committed(results: Sequence[CommitResult]) -> None:
        delivered.extend(result.message.seq for result in results)

    persister = Persister(
        refusing, _Source(batches), on_committed, on_failed=lambda batch, _ms: told.extend(batch)
    )
    running = asyncio.create_task(persister.run())
    outcomes = [await settled.get() for _ in batches]
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert outcomes == ["fenced out", "retry 1000", "done 1"]
    assert delivered == [1]
    assert told == []  # the source brings the failed batch again: nobody resends


async def test_a_stop_ends_a_deliver_stage_that_swallowed_its_cancellation(store: SqlMessageStore) -> None:
    """As nats-py can lose a cancellation mid-publish: the stage then waits for the next batch."""
    accepted = LocalAcceptedLog(1)
    assert accepted.offer(_accepted(0)) is None
    delivering, never = asyncio.Event(), asyncio.Event()

    async def on_committed(_results: Sequence[CommitResult]) -> None:
        delivering.set()
        with contextlib.suppress(asyncio.CancelledError):  # lost in the library, as nats-py loses it
            await never.wait()

    persister = Persister(store, accepted, on_committed)
    running = asyncio.create_task(persister.run())
    async with asyncio.timeout(_STOP_BOUND_S):
        await delivering.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
